"""Continuous-time VE SDE on CIFAR-10 (σ 0.01 → 50, N = 1000): the U-Net sees log σ through
Gaussian Fourier features; reverse-diffusion predictor + Langevin corrector, snr 0.16
(Song et al. 2021, NCSN++ cont. settings on the DDPM architecture).

  python -m ddpm_jax.main --config configs/cifar10_ve.py --workdir /tmp/cifar10_ve \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.objective = "dsm"
  config.sde.name = "ve"
  config.sde.sigma_min = 0.01
  config.sde.sigma_max = 50.0
  config.sampling.method = "pc"
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "langevin"
  config.sampling.snr = 0.16
  return config

"""Continuous-time VP SDE on CIFAR-10 with the DDPM U-Net ("DDPM cont. (VP)" of Song et al.
2021): β(t) from 0.1 to 20, DSM with λ = σ², Euler–Maruyama sampling without corrector.

  python -m ddpm_jax.main --config configs/cifar10_vp.py --workdir /tmp/cifar10_vp \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.objective = "dsm"
  config.sde.name = "vp"
  config.sampling.method = "pc"
  config.sampling.predictor = "euler_maruyama"
  config.sampling.corrector = "none"
  return config

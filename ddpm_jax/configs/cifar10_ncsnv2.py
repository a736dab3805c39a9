"""NCSNv2 on CIFAR-10 (Song & Ermon 2020, ermongroup/ncsnv2 configs/cifar10.yml): the
RefineNet NCSNv2 (ngf 128, InstanceNorm++, ELU), L = 232 geometric levels, DSM with
λ(σ) = σ² summed over pixels, Adam 1e-4, EMA 0.999, annealed Langevin with ε = 6.2e-6,
5 steps per level and a final denoising step. The paper's σ 50 → 0.01 are for data in
[0, 1]; on this library's [−1, 1] data they double (100 → 0.02). Its released checkpoints
load with --mode import --import_from=ncsnv2:checkpoint_N.pth.
  python -m ddpm_jax.main --config configs/cifar10_ncsnv2.py --workdir /tmp/cifar10_ncsnv2 \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm, cifar10_ncsn


def get_config():
  config = cifar10_ncsn.ncsn(cifar10_ddpm.get_config())
  config.sde.sigma_max = 100.0
  config.sde.sigma_min = 0.02
  config.sde.num_scales = 232
  config.optim.learning_rate = 1e-4
  config.training.num_train_steps = 300_000
  m = config.model
  m.name = "ncsnv2"
  m.ch = 128
  config.sampling.step_lr = 6.2e-6
  config.sampling.n_steps_each = 5
  return config

"""DDPM++ cont. (deep, sub-VP) on CIFAR-10 (Song et al. 2021, score_sde configs/subvp/
cifar10_ddpmpp_deep_continuous.py): NLL 2.99 bits/dim and FID 2.92 with the probability-flow
ODE (Table 2, the last checkpoint), FID 2.41, IS 9.57 with PC sampling (Table 3; checkpoint
subvp/cifar10_ddpmpp_deep_continuous). 106,632,579 parameters: DDPM++ with 8 residual blocks
per level on the sub-VP SDE, 950k steps. score_sde's config trains with the default
weighting λ = σ² (not the likelihood weighting of Song et al. 2021b); set
--config.sde.likelihood_weighting=True for that variant.

  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_deep_subvp.py \
      --workdir /tmp/cifar10_ddpmpp_deep_subvp --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_deep_subvp.py \
      --workdir /tmp/cifar10_ddpmpp_deep_subvp --mode bpd --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpmpp_subvp


def get_config():
  config = cifar10_ddpmpp_subvp.get_config()
  config.model.num_res_blocks = 8
  config.training.num_train_steps = 950_000
  return config

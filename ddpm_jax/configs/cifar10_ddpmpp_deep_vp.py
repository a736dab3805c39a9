"""DDPM++ cont. (deep, VP) on CIFAR-10 (Song et al. 2021, score_sde configs/vp/
cifar10_ddpmpp_deep_continuous.py): FID 2.41, IS 9.68 (Table 3); NLL 3.13 bits/dim (Table 2;
checkpoint vp/cifar10_ddpmpp_deep_continuous). 106,632,579 parameters: DDPM++ with 8
residual blocks per level, 950k steps; everything else as cifar10_ddpmpp_vp.

  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_deep_vp.py \
      --workdir /tmp/cifar10_ddpmpp_deep_vp --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_deep_vp.py \
      --workdir /tmp/cifar10_ddpmpp_deep_vp --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpmpp_vp


def get_config():
  config = cifar10_ddpmpp_vp.get_config()
  config.model.num_res_blocks = 8
  config.training.num_train_steps = 950_000
  return config

"""NCSN++ cont. (deep, VE) on CIFAR-10 (Song et al. 2021, score_sde configs/ve/
cifar10_ncsnpp_deep_continuous.py): FID 2.20, IS 9.89 (Table 3, the paper's headline
result; checkpoint ve/cifar10_ncsnpp_deep_continuous). 107,587,075 parameters: NCSN++ with 8
residual blocks per level instead of 4, 950k steps; everything else as cifar10_ncsnpp_ve.
The deep network fits batch 128 on one accelerator with --config.model.remat=True.

  python -m ddpm_jax.main --config configs/cifar10_ncsnpp_deep_ve.py \
      --workdir /tmp/cifar10_ncsnpp_deep_ve --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_ncsnpp_deep_ve.py \
      --workdir /tmp/cifar10_ncsnpp_deep_ve --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ncsnpp_ve


def get_config():
  config = cifar10_ncsnpp_ve.get_config()
  config.model.num_res_blocks = 8
  config.training.num_train_steps = 950_000
  return config

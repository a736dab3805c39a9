"""Continuous-time sub-VP SDE on CIFAR-10 with the DDPM U-Net (Song et al. 2021).

  python -m ddpm_jax.main --config configs/cifar10_subvp.py --workdir /tmp/cifar10_subvp \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_vp


def get_config():
  config = cifar10_vp.get_config()
  config.sde.name = "subvp"
  return config

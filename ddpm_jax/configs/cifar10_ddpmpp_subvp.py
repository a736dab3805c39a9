"""DDPM++ cont. (sub-VP) on CIFAR-10 (Song et al. 2021, score_sde configs/subvp/
cifar10_ddpmpp_continuous.py): FID 2.61, IS 9.56 (Table 3); NLL 3.02 bits/dim (Table 2;
checkpoint subvp/cifar10_ddpmpp_continuous). cifar10_ddpmpp_vp's network and training on the
sub-VP SDE (β 0.1 → 20).

  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_subvp.py \
      --workdir /tmp/cifar10_ddpmpp_subvp --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_ddpmpp_subvp.py \
      --workdir /tmp/cifar10_ddpmpp_subvp --mode bpd --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpmpp_vp


def get_config():
  config = cifar10_ddpmpp_vp.get_config()
  config.sde.name = "subvp"
  return config

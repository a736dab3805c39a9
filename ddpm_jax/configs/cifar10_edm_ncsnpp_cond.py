"""EDM, class-conditional CIFAR-10, NCSN++ form (config F of Karras et al. 2022, Table 2):
FID 1.79 with 35 network evaluations (NVlabs/edm train.py --cond=1 --arch=ncsnpp,
checkpoint edm-cifar10-32x32-cond-ve). cifar10_edm_ncsnpp with 10 labels (56,400,643
parameters, EDM's count, + 128 Fourier frequencies); no label dropout.

  python -m ddpm_jax.main --config configs/cifar10_edm_ncsnpp_cond.py \
      --workdir /tmp/cifar10_edm_ncsnpp_cond --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_edm_ncsnpp_cond.py \
      --workdir /tmp/cifar10_edm_ncsnpp_cond --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_edm_ncsnpp


def get_config():
  config = cifar10_edm_ncsnpp.get_config()
  config.model.conditional = True
  config.data.num_classes = 10
  config.training.label_dropout = 0.0
  return config

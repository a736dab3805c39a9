"""EDM, class-conditional CIFAR-10, DDPM++ form (config F of Karras et al. 2022, Table 2):
FID 1.79 with 35 network evaluations (NVlabs/edm train.py --cond=1 --arch=ddpmpp,
checkpoint edm-cifar10-32x32-cond-vp). cifar10_edm_ddpmpp with 10 labels (55,735,299
parameters, EDM's count); EDM trains it without label dropout, so there is no
classifier-free guidance (sampling.guidance_weight 0).

  python -m ddpm_jax.main --config configs/cifar10_edm_ddpmpp_cond.py \
      --workdir /tmp/cifar10_edm_ddpmpp_cond --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_edm_ddpmpp_cond.py \
      --workdir /tmp/cifar10_edm_ddpmpp_cond --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_edm_ddpmpp


def get_config():
  config = cifar10_edm_ddpmpp.get_config()
  config.model.conditional = True
  config.data.num_classes = 10
  config.training.label_dropout = 0.0
  return config

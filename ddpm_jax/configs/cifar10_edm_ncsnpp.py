"""EDM, unconditional CIFAR-10, NCSN++ form ("VE", config F of Karras et al. 2022, Table 2):
FID 1.98 with 35 network evaluations (NVlabs/edm train.py --cond=0 --arch=ncsnpp,
checkpoint edm-cifar10-32x32-uncond-ve). SongUNet with 56,397,827 parameters (EDM's count)
+ 128 Fourier frequencies (a buffer there): Fourier embedding of c_noise, noise embedding
2 × 128 wide, residual encoder, standard decoder, resampling filter [1, 3, 3, 1]; training
and sampling as cifar10_edm_ddpmpp.

  python -m ddpm_jax.main --config configs/cifar10_edm_ncsnpp.py --workdir /tmp/cifar10_edm_ncsnpp \
      --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_edm_ncsnpp.py --workdir /tmp/cifar10_edm_ncsnpp \
      --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_edm_ddpmpp


def get_config():
  config = cifar10_edm_ddpmpp.get_config()
  m = config.model
  m.embedding_type = "fourier"
  m.channel_mult_noise = 2
  m.encoder_type = "residual"
  m.decoder_type = "standard"
  m.resample_filter = (1, 3, 3, 1)
  return config

"""EDM, unconditional CIFAR-10, DDPM++ form ("VP", config F of Karras et al. 2022, Table 2):
FID 1.97 with 35 network evaluations (NVlabs/edm train.py --cond=0 --arch=ddpmpp,
checkpoint edm-cifar10-32x32-uncond-vp). SongUNet with 55,733,891 parameters, EDM's count,
the augmentation mapping included: ch 128, ch_mult (2, 2, 2), 4 blocks per level, attention
at 16×16, dropout 0.13, augment_dim 9, positional embedding. EDM preconditioning and loss
(σ_data 0.5, ln σ ~ N(−1.2, 1.2²)), non-leaking augmentation with p = 0.12 (x-flips, y-flips,
scaling, rotation, anisotropy, translation; no dataset flips), Adam 1e-3 (β 0.9, 0.999,
ε 1e-8) ramped up linearly over 10M images, no gradient clipping, batch 512, 200M images
(390,625 steps), EMA with a half-life of 500k images (0.5^(512/500k) = 0.999290 per step;
EDM's ramp-up of the half-life over the first images is not modelled). Sampling: EDM's
deterministic Heun sampler, 18 steps (35 evaluations), ρ = 7, σ from 80 to 0.002. FID: 50k
samples against the training set's statistics, the best of three seeds in the paper.

EDM sums its loss over pixels, this library averages it: Adam's update is the same.

  python -m ddpm_jax.main --config configs/cifar10_edm_ddpmpp.py --workdir /tmp/cifar10_edm_ddpmpp \
      --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_edm_ddpmpp.py --workdir /tmp/cifar10_edm_ddpmpp \
      --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm

BATCH = 512


def get_config():
  config = cifar10_ddpm.get_config()
  config.data.random_flip = False  # the augmentation's x-flips take their place
  t = config.training
  t.objective = "edm"
  t.batch_size = BATCH
  t.num_train_steps = 200_000_000 // BATCH
  t.ema_decay = 0.5 ** (BATCH / 500_000)
  t.augment_p = 0.12
  t.checkpoint_every = 12_500
  t.sample_every = 25_000
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 10_000_000 // BATCH
  config.optim.grad_clip = 0.0

  m = config.model
  m.name = "song_unet"
  m.ch = 128
  m.ch_mult = (2, 2, 2)
  m.num_res_blocks = 4
  m.attn_resolutions = (16,)
  m.dropout = 0.13
  m.channel_mult_emb = 4
  m.augment_dim = 9
  m.embedding_type = "positional"
  m.channel_mult_noise = 1
  m.encoder_type = "standard"
  m.decoder_type = "standard"
  m.resample_filter = (1, 1)

  config.edm.sigma_data = 0.5
  config.edm.sigma_min = 0.002
  config.edm.sigma_max = 80.0
  s = config.sampling
  s.method = "edm"
  s.num_steps = 18
  s.edm_churn = 0.0
  config.fid.num_samples = 50_000
  config.fid.ref_split = "train"
  config.fid.ref_num_examples = 0
  return config

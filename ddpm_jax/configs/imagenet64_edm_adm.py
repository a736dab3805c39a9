"""EDM, class-conditional ImageNet 64×64 with ADM (config F of Karras et al. 2022, Table 2):
FID 1.36 with 511 network evaluations (NVlabs/edm train.py --cond=1 --arch=adm
--duration=2500 --batch=4096 --lr=1e-4 --ema=50 --dropout=0.10 --augment=0 --fp16=1,
checkpoint edm-imagenet-64x64-cond-adm). DhariwalUNet with 295,899,267 parameters (EDM's
count): ch 192, ch_mult (1, 2, 3, 4), 3 blocks per level, attention at 32, 16 and 8 (64
channels per head), 1000 labels, dropout 0.1, no augmentation. Adam 1e-4 ramped up over 10M
images, batch 4096, 2.5G images (610,351 steps), EMA half-life 50M images
(0.5^(4096/50M) = 0.999943 per step), bfloat16 compute (EDM: float16 with loss scaling 100).
Sampling: EDM's stochastic sampler, 256 steps, S_churn 40, S_tmin 0.05, S_tmax 50, S_noise
1.003 (511 evaluations).

The data: tfds imagenet_resized/64x64, prepared with `tfds build` and data.data_dir. It is
ImageNet box-resized to 64×64 without cropping, where EDM's dataset_tool center-crops
first (--transform=center-crop), so its images differ from EDM's a little.

  python -m ddpm_jax.main --config configs/imagenet64_edm_adm.py --workdir /tmp/imagenet64_adm \
      --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/imagenet64_edm_adm.py --workdir /tmp/imagenet64_adm \
      --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import default

BATCH = 4096


def get_config():
  config = default.get_config()
  config.data.dataset = "imagenet_resized/64x64"
  config.data.image_size = 64
  config.data.random_flip = False
  config.data.num_classes = 1000
  config.eval.split = "validation"
  t = config.training
  t.objective = "edm"
  t.batch_size = BATCH
  t.num_train_steps = 2_500_000_000 // BATCH
  t.ema_decay = 0.5 ** (BATCH / 50_000_000)
  t.label_dropout = 0.0
  t.checkpoint_every = 5_000
  t.sample_every = 25_000
  config.optim.learning_rate = 1e-4
  config.optim.warmup_steps = 10_000_000 // BATCH
  config.optim.grad_clip = 0.0

  m = config.model
  m.name = "dhariwal_unet"
  m.conditional = True
  m.ch = 192
  m.ch_mult = (1, 2, 3, 4)
  m.num_res_blocks = 3
  m.attn_resolutions = (32, 16, 8)
  m.dropout = 0.1
  m.channel_mult_emb = 4
  m.augment_dim = 0
  m.dtype = "bfloat16"

  s = config.sampling
  s.method = "edm"
  s.num_steps = 256
  s.edm_churn = 40.0
  s.edm_s_tmin = 0.05
  s.edm_s_tmax = 50.0
  s.edm_s_noise = 1.003
  config.fid.num_samples = 50_000
  config.fid.ref_split = "train"
  config.fid.ref_num_examples = 0
  return config

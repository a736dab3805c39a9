"""The demo: a small U-Net trained on the embedded 8×8 digits, minutes on a laptop CPU.

  python -m ddpm_jax.main --config configs/demo.py --workdir demo_workdir
"""

from ddpm_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "digits"
  config.data.image_size = 8
  config.model.ch = 32
  config.model.ch_mult = (1, 2)
  config.model.num_res_blocks = 1
  config.model.attn_resolutions = ()
  config.model.dropout = 0.0
  config.training.batch_size = 64
  config.training.num_train_steps = 3000
  config.training.ema_decay = 0.995
  config.training.log_every = 100
  config.training.checkpoint_every = 1000
  config.training.sample_every = 0
  config.optim.learning_rate = 1e-3
  config.optim.warmup_steps = 100
  config.fid.ref_split = "train"  # the embedded digits have one split
  config.fid.ref_num_examples = 0
  return config

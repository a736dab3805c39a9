"""DDPM on MNIST resized to 32×32: a 3-level U-Net (ch 64, ch_mult 1,2,2), attention at 16×16.

  python -m ddpm_jax.main --config configs/mnist_ddpm.py --workdir /tmp/mnist_ddpm \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "mnist"
  config.data.image_size = 32
  config.eval.split = "test"
  config.model.ch = 64
  config.model.ch_mult = (1, 2, 2)
  config.model.attn_resolutions = (16,)
  config.training.batch_size = 128
  config.training.num_train_steps = 60_000
  config.training.ema_decay = 0.9995
  config.optim.warmup_steps = 1000
  config.training.checkpoint_every = 5000
  config.training.sample_every = 10_000
  return config

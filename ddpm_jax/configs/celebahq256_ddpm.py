"""DDPM on CelebA-HQ 256×256 (Ho et al. 2020): ch_mult (1, 1, 2, 2, 4, 4), attention at 16×16,
dropout 0, batch 64, learning rate 2e-5, EMA 0.9999. tfds has no CelebA-HQ download: export the
images to a folder and point data.path at it.

  python -m ddpm_jax.main --config configs/celebahq256_ddpm.py --workdir /tmp/celebahq \
      --config.data.path=/data/celebahq256
"""

from ddpm_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "folder"
  config.data.image_size = 256
  config.data.random_flip = True
  config.model.ch_mult = (1, 1, 2, 2, 4, 4)
  config.model.dropout = 0.0
  config.training.batch_size = 64
  config.training.num_train_steps = 500_000
  config.optim.learning_rate = 2e-5
  config.model.dtype = "bfloat16"
  return config

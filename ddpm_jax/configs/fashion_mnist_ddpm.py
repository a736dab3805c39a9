"""DDPM on Fashion-MNIST resized to 32×32: a 3-level U-Net (ch 64, ch_mult 1,2,2), attention
at 16×16, bf16 compute. `../shared/tfds_array_record` holds the prepared dataset here.

  python -m ddpm_jax.main --config configs/fashion_mnist_ddpm.py --workdir /tmp/fmnist_ddpm \
      --config.data.data_dir=../shared/tfds_array_record
"""

from ddpm_jax.configs import mnist_ddpm


def get_config():
  config = mnist_ddpm.get_config()
  config.data.dataset = "fashion_mnist"
  config.data.random_flip = True
  config.model.dtype = "bfloat16"
  return config

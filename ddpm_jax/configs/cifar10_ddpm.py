"""DDPM on CIFAR-10 with the paper's hyper-parameters (Ho et al. 2020, appendix B):
35.7M-parameter U-Net, linear β 1e-4 → 0.02 over T = 1000, L_simple on ε, Adam 2e-4 with
5000 warmup steps, batch 128, dropout 0.1, random flips, EMA 0.9999, 800k steps.

  python -m ddpm_jax.main --config configs/cifar10_ddpm.py --workdir /tmp/cifar10_ddpm \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "cifar10"
  config.data.image_size = 32
  config.data.random_flip = True
  config.eval.split = "test"
  return config

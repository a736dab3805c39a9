"""NCSN on MNIST 32×32: 10 levels σ 1 → 0.01, annealed Langevin sampling (the settings of
cifar10_ncsn.py on the MNIST U-Net).

  python -m ddpm_jax.main --config configs/mnist_ncsn.py --workdir /tmp/mnist_ncsn \
      --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ncsn, mnist_ddpm


def get_config():
  return cifar10_ncsn.ncsn(mnist_ddpm.get_config())

"""Rectified flow (linear path, velocity prediction, SD3's logit-normal time draws) on
Fashion-MNIST 32×32 with the small U-Net of fashion_mnist_ddpm; sampled by Heun on the flow
ODE, 25 steps (51 network evaluations).

  python -m ddpm_jax.main --config fashion_mnist_flow --workdir /tmp/fmnist_flow \
      --config.data.data_dir=../shared/tfds_array_record
"""

from ddpm_jax.configs import fashion_mnist_ddpm


def get_config():
  config = fashion_mnist_ddpm.get_config()
  config.training.objective = "flow"
  config.flow.path = "linear"
  config.flow.t_sampler = "logit_normal"  # SD3's rf/lognorm(0.00, 1.00)
  config.sampling.method = "flow_heun"
  config.sampling.num_steps = 25
  return config

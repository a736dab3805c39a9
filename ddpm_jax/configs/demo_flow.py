"""The demo as rectified flow: the same U-Net and digits, trained by flow matching on the
linear path (velocity prediction), sampled by Euler on the flow ODE.

  python -m ddpm_jax.main --config demo_flow --workdir demo_flow_workdir
"""

from ddpm_jax.configs import demo


def get_config():
  config = demo.get_config()
  config.training.objective = "flow"
  config.flow.path = "linear"
  config.sampling.method = "flow_euler"
  config.sampling.num_steps = 50
  return config

"""1-Rectified Flow on CIFAR-10 with DDPM++ (Liu et al. 2023, RectifiedFlow's
configs/rectified_flow/cifar10_rf_gaussian_ddpmpp.py): FID 2.58, IS 9.60 with the RK45 ODE
solver at 127 network evaluations (Table 1; 1-step Euler after a second rectification and
distillation: FID 4.85). The network is DDPM++ cont. (VP)'s NCSN++ (fed t·999 by positional
embeddings, the scale of Liu et al.'s code, whose t runs the other way: from noise at 0 to
data at 1; their weights are not read here), trained on the linear path x_t = (1 − t) x_0 + t ε
to predict the velocity ε − x_0: dropout 0.15, EMA 0.999999, Adam 2e-4 with 5000 warm-up
steps, clip 1, batch 128, 1.3M steps; sampled by the adaptive probability-flow ODE (dopri5,
rtol = atol = 1e-5, unclipped) from t = 1 to 1e-3. Liu et al. sum the loss over pixels where this takes
the mean (Adam's steps are the same up to ε).

  python -m ddpm_jax.main --config cifar10_rectified_flow --workdir /tmp/cifar10_rf \
      --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config cifar10_rectified_flow --workdir /tmp/cifar10_rf \
      --mode eval --config.data.data_dir=~/tensorflow_datasets     # or --mode bpd
"""

from ddpm_jax.configs import cifar10_ddpmpp_vp


def get_config():
  config = cifar10_ddpmpp_vp.get_config()
  config.training.objective = "flow"
  config.training.ema_decay = 0.999999
  config.flow.path = "linear"
  config.flow.prediction = "velocity"
  config.flow.time_scale = 999.0
  config.flow.t_sampler = "uniform"
  config.model.dropout = 0.15
  s = config.sampling
  s.method = "ode"
  s.ode_solver = "dopri5"
  s.rtol = s.atol = 1e-5
  s.eps = 1e-3
  s.denoise = False
  s.clip_x0 = False  # Liu et al.'s RK45 samples are the ODE's, unclipped
  return config

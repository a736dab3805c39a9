"""NCSN++ cont. (VE) on CIFAR-10 (Song et al. 2021, score_sde configs/ve/
cifar10_ncsnpp_continuous.py): FID 2.38, IS 9.83 (Table 3; score_sde's README, checkpoint
ve/cifar10_ncsnpp_continuous). 62,758,915 parameters: nf 128, ch_mult (1, 2, 2, 2), 4 BigGAN
blocks per level, attention at 16×16, FIR [1, 3, 3, 1], progressive input "residual", Fourier
features of log σ (scale 16), scale_by_sigma; DSM summed over pixels, Adam 2e-4 with 5000
warm-up steps, gradient clip 1, batch 128, EMA 0.999, 1.3M steps; PC sampling with the
reverse-diffusion predictor and Langevin corrector (snr 0.16), N = 1000, ending at t = 1e-5.

score_sde trains this VE model on data in [0, 1] with σ from 0.01 to 50; this library's data
are 2x − 1 ∈ [−1, 1], where the same process has σ from 0.02 to 100.

  python -m ddpm_jax.main --config configs/cifar10_ncsnpp_ve.py --workdir /tmp/cifar10_ncsnpp_ve \
      --config.data.data_dir=~/tensorflow_datasets
  python -m ddpm_jax.main --config configs/cifar10_ncsnpp_ve.py --workdir /tmp/cifar10_ncsnpp_ve \
      --mode eval --config.data.data_dir=~/tensorflow_datasets
"""

from ddpm_jax.configs import cifar10_ddpm


def get_config():
  config = cifar10_ddpm.get_config()
  config.training.objective = "dsm"
  config.training.num_train_steps = 1_300_000
  config.training.ema_decay = 0.999
  config.training.checkpoint_every = 50_000
  config.sde.name = "ve"
  config.sde.sigma_min = 0.02
  config.sde.sigma_max = 100.0
  config.sde.reduce = "sum"  # score_sde's reduce_mean = False

  m = config.model
  m.name = "ncsnpp"
  m.ch = 128
  m.ch_mult = (1, 2, 2, 2)
  m.num_res_blocks = 4
  m.attn_resolutions = (16,)
  m.dropout = 0.1
  m.mean_type = "score"  # the network's output ÷ σ is the score
  m.embedding_type = "fourier"
  m.fourier_scale = 16.0
  m.fir = True
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.resblock_type = "biggan"
  m.progressive = "none"
  m.progressive_input = "residual"
  m.progressive_combine = "sum"
  m.init_scale = 0.0
  m.scale_by_sigma = True

  s = config.sampling
  s.method = "pc"
  s.predictor = "reverse_diffusion"
  s.corrector = "langevin"
  s.snr = 0.16
  s.n_steps_each = 1
  s.eps = 1e-5
  config.fid.num_samples = 50_000
  return config

"""Defaults every config starts from: the DDPM CIFAR-10 recipe's choices, on the embedded
digits. The config files (configs/*.py) start from these and override fields; so do the
weight imports (interop/), which need no config file.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  # JAX's persistent compilation cache (infra/compile_cache.py): a resumed or repeated run does
  # not compile again; "" turns it off; JAX_COMPILATION_CACHE_DIR, where set, takes precedence.
  config.compilation_cache = "~/.cache/ddpm_jax/jax_compilation_cache"
  # GiB a run may use per device (config/memory.py refuses a run whose lower-bound estimate is
  # larger); 0: each device's memory, or the host's on CPU.
  config.max_memory = 0.0

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "digits"      # "digits" (embedded), "npz", "folder", or a tfds name
  data.split = "train"
  data.data_dir = ""           # tfds data_dir holding the prepared (array_record) dataset
  data.path = ""               # the .npz file or image folder; "{split}" → the split
  data.image_size = 32         # the U-Net below is DDPM's CIFAR-10 one (attention at 16×16)
  data.random_flip = False
  data.num_workers = 4         # grain processes for sources read per batch (tfds); arrays need none
  data.num_classes = 10        # used when model.conditional

  config.diffusion = diffusion = ml_collections.ConfigDict()
  diffusion.beta_schedule = "linear"  # linear | quadratic | cosine | sigmoid | constant
  diffusion.beta_start = 1e-4
  diffusion.beta_end = 0.02
  diffusion.num_timesteps = 1000
  diffusion.zero_terminal_snr = False

  config.model = model = ml_collections.ConfigDict()
  model.name = "ddpm"          # ddpm (Ho et al.'s U-Net) | ncsnpp (score_sde's NCSN++/DDPM++)
                               # | song_unet (EDM's DDPM++/NCSN++) | dhariwal_unet (EDM's ADM)
                               # | half_unet (the U-Net's encoder: a classifier, ADM's)
  model.ch = 128               # base channels (score_sde's nf, EDM's model_channels)
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.dropout = 0.1
  model.resamp_with_conv = True
  model.mean_type = "eps"      # eps | x0 | v
  model.var_type = "fixed_large"  # fixed_small | fixed_large | learned | learned_range
  model.conditional = False    # class labels, with a null label for classifier-free guidance
  model.dtype = "float32"      # compute: float32 | bfloat16 | float16 (dynamic loss scaling);
                               # parameters stay float32
  model.attention = "einsum"   # einsum | xla | cudnn (jax.nn.dot_product_attention; GPU)
  model.remat = False          # recompute each residual block in the backward pass (memory)
  # ncsnpp and song_unet (each network reads only its own options; the gate refuses the rest)
  model.embedding_type = "positional"  # positional | fourier (of the noise input)
  model.fourier_scale = 16.0   # ncsnpp: std of the Fourier frequencies
  # ncsnpp (score_sde's names)
  model.fir = False            # FIR resampling with fir_kernel (else nearest / average)
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True    # residual sums ÷ √2
  model.resblock_type = "biggan"  # biggan | ddpm
  model.progressive = "none"   # none | output_skip | residual
  model.progressive_input = "none"  # none | input_skip | residual
  model.progressive_combine = "sum"  # sum | cat
  model.init_scale = 0.0       # scale of the zero-initialized layers (0: 1e-10)
  model.scale_by_sigma = False  # output ÷ σ (VE score models, Fourier of log σ)
  model.nonlinearity = "swish"  # swish | elu | relu | lrelu
  # song_unet (EDM's names)
  model.channel_mult_noise = 1  # noise embedding width ÷ ch: 1 DDPM++, 2 NCSN++
  model.encoder_type = "standard"  # standard | skip | residual
  model.decoder_type = "standard"  # standard | skip
  model.resample_filter = (1, 1)  # (1, 1) DDPM++ | (1, 3, 3, 1) NCSN++
  # song_unet and dhariwal_unet
  model.channel_mult_emb = 4   # embedding width ÷ ch
  model.augment_dim = 0        # augmentation labels fed to the network (9 with training.augment_p)

  config.sde = sde = ml_collections.ConfigDict()  # for training.objective "dsm" / "ncsn"
  sde.name = "vp"              # vp | subvp | ve
  sde.beta_min = 0.1
  sde.beta_max = 20.0
  sde.sigma_min = 0.01
  sde.sigma_max = 50.0
  sde.num_scales = 1000        # N of the discretization (NCSN: the number of levels L)
  sde.train_eps = 1e-5         # t ~ U(train_eps, 1)
  sde.likelihood_weighting = False
  sde.importance_sampling = False
  sde.reduce = "mean"          # mean | sum over the pixels of each example

  config.classifier = classifier = ml_collections.ConfigDict()  # training.objective "classifier"
  classifier.process = "ddpm"  # the objective of the models it guides: ddpm | dsm | ncsn | edm

  config.edm = edm = ml_collections.ConfigDict()  # for training.objective "edm"
  edm.sigma_min = 0.002        # the σ range of the VE SDE its samplers integrate
  edm.sigma_max = 80.0
  edm.sigma_data = 0.5         # the data's standard deviation (c_skip, c_out, c_in, λ)
  edm.p_mean = -1.2            # ln σ ~ N(p_mean, p_std²) in training
  edm.p_std = 1.2

  config.training = training = ml_collections.ConfigDict()
  # ddpm (discrete, config.diffusion) | dsm (config.sde) | ncsn | edm (config.edm)
  training.objective = "ddpm"   # ddpm | dsm | ncsn | edm | classifier (for classifier guidance)
  training.batch_size = 128    # global, over all devices and hosts
  training.num_train_steps = 800_000
  training.loss_type = "simple"  # simple | vlb | hybrid
  training.vlb_weight = 1e-3   # λ of the hybrid loss
  training.t_sampler = "uniform"  # uniform | antithetic | importance (p_t ∝ √E[L_t²], objective ddpm)
  training.ema_decay = 0.9999
  training.label_dropout = 0.1  # for conditional models
  training.augment_p = 0.0     # EDM's augmentation probability (0.12 for CIFAR-10); needs
                               # model.augment_dim = 9 (song_unet, dhariwal_unet)
  training.augment_color = False  # also ADA's colour transforms (model.augment_dim = 15)
  training.steps_per_dispatch = 1
  training.grad_accum_steps = 1  # micro-batches per device and step, gradients averaged (memory)
  training.loss_scale_init = 2.0**15  # model.dtype float16: the dynamic loss scale's start;
  training.loss_scale_every = 2000  # doubled after this many finite steps, halved on overflow
  training.log_every = 100
  training.checkpoint_every = 10_000
  training.keep_checkpoints = 3
  training.sample_every = 50_000  # sample grids during training (0: only at the end)
  # Post-hoc EMA (EDM2): power-function EMAs of these lengths σ_rel tracked during training
  # (e.g. (0.05, 0.10); (): off), saved every phema_every steps and at the end to
  # WORKDIR/phema_snapshots/, from which --mode phema reconstructs an EMA of any length.
  training.phema_sigma_rels = ()
  training.phema_every = 10_000

  config.optim = optim = ml_collections.ConfigDict()
  optim.learning_rate = 2e-4
  optim.warmup_steps = 5000
  optim.grad_clip = 1.0
  optim.beta1 = 0.9
  optim.beta2 = 0.999
  optim.eps = 1e-8

  config.phema = phema = ml_collections.ConfigDict()  # --mode phema (training.phema_sigma_rels)
  phema.sigma_rel = 0.10       # the EMA length to reconstruct, in (0, 1/√12]
  phema.step = 0               # at this snapshot's step (0: the newest)
  phema.output = ""            # the new workdir (default WORKDIR/phema/sigma_rel<σ>_step<N>)

  config.edit = edit = ml_collections.ConfigDict()  # --mode edit: SDEdit and inpainting
  edit.input = ""              # an .npz with an 'images' array (and 'labels'), or an image folder
  edit.mask = ""               # inpainting: an .npz 'mask' or an image, 1 (white) = keep the pixel
  edit.t_start = 0.5           # SDEdit's t₀/T: noise the inputs to t₀, denoise from there

  config.sampling = sampling = ml_collections.ConfigDict()
  # ddpm | ddim (objective ddpm); pc | ode | dpm_solver | unipc | edm (ddpm, dsm, edm); ald (ncsn)
  sampling.method = "ddim"
  sampling.num_steps = 50      # ddim, dpm_solver, unipc, edm steps; ode steps (euler/heun)
  sampling.skip_type = "uniform"  # uniform | quadratic | trailing
  sampling.eta = 0.0
  sampling.clip_x0 = True      # clip every x̂_0 to [-1, 1]: ddpm, ddim, dpm_solver, unipc, edm, ode
  sampling.num_samples = 64
  sampling.batch_size = 64
  sampling.predictor = "reverse_diffusion"  # pc: euler_maruyama | reverse_diffusion | ancestral | none
  sampling.corrector = "langevin"           # pc: langevin | ald | none
  sampling.snr = 0.16
  sampling.n_steps_each = 1    # corrector steps per level (pc); steps per σ (ald)
  sampling.eps = 1e-3          # the last t of the reverse process
  sampling.denoise = True      # SDE samplers end with x̂_0(x, eps) (pc: the last noise-free mean)
  sampling.ode_solver = "tsit5"  # tsit5 | dopri5 | heun | euler
  sampling.rtol = 1e-5
  sampling.atol = 1e-5
  sampling.step_lr = 2e-5      # ald: ε of α_i = ε σ_i²/σ_L²
  sampling.guidance_weight = 0.0  # classifier-free guidance w for conditional models
  sampling.classifier_scale = 0.0  # classifier guidance s (0: off), with the classifier of
  sampling.classifier_workdir = ""  # this workdir (a training.objective "classifier" run)
  sampling.solver_order = 2    # dpm_solver, unipc: 1 | 2 | 3
  # dpm_solver, unipc, edm: time_uniform | logsnr | karras ("": logsnr; karras for edm)
  sampling.spacing = ""
  sampling.lower_order_final = True  # dpm_solver, unipc: end at orders 2, 1 when num_steps < 15
  sampling.dpm_solver_variant = "multistep"  # multistep (1M/2M/3M) | singlestep (2S)
  sampling.dpm_solver_3m = "published"  # 3M's D2 term: published (×1) | taylor (×2, order 3)
  sampling.dpm_solver_start = "lower_order"  # 3M: lower_order (orders 1, 2 first) | singlestep (2S, +1)
  sampling.unipc_variant = "bh2"  # B(h) of UniPC: bh1 | bh2
  sampling.unipc_corrector = True  # UniC after each step: order + 1 at no extra evaluation
  sampling.edm_churn = 0.0     # EDM S_churn (0: deterministic Heun); noise only where
  sampling.edm_s_tmin = 0.0    # S_tmin <= σ <= S_tmax, with σ = σ(t)/α(t)
  sampling.edm_s_tmax = 1e9    # no upper limit (finite, so config.json stays strict JSON)
  sampling.edm_s_noise = 1.0
  sampling.use_ema = True
  sampling.seed = 0

  config.eval = evaluation = ml_collections.ConfigDict()  # --mode bpd
  evaluation.split = "train"   # the embedded digits have one split; "test" for tfds data
  evaluation.num_examples = 256  # 0: the whole split
  evaluation.batch_size = 64
  evaluation.divergence = "rademacher"  # rademacher | gaussian | exact (score models)
  evaluation.rtol = 1e-5
  evaluation.atol = 1e-5
  evaluation.seed = 0

  config.fid = fid = ml_collections.ConfigDict()  # --mode eval
  # a paper's protocol (evaluation/protocols.py: ddpm | score_sde | edm | pytorch_fid |
  # clean_fid) fixes the reference (all of "train"), the resize and the seeds; "": the fields below
  fid.protocol = ""
  fid.num_samples = 50_000     # per seed
  fid.resize = "bilinear"      # to 299: bilinear | tf1_bilinear | clean_bicubic (inception.py)
  fid.num_seeds = 1            # sampling.seed, +1, …: FID of each, the lowest reported (EDM: 3)
  fid.reference_stats = ""     # a published reference .npz (mu/sigma, or score_sde's pool_3)
                               # instead of fid.ref_split's features
  fid.is_splits = 10           # the Inception Score's splits (weights with the logits layer)
  fid.chunk_size = 512         # samples per resumable chunk (a multiple of the devices)
  fid.inception_batch_size = 256
  fid.inception_weights = "~/.cache/ddpm_jax/inception_fid.npz"  # docs/command_line.md says how to fill it
  fid.ref_split = "test"
  fid.ref_num_examples = 10_000  # 0: the whole split
  fid.cache_dir = ""           # default WORKDIR/fid_cache
  fid.kid_subsets = 100
  fid.kid_subset_size = 1000
  return config

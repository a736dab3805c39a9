"""Every config field, declared once: its default, one line of help and, where it has them,
its range or its choices (read from the module that consumes them). defaults.get_config() is
assembled from these declarations, the gate (config/schema.py) checks them, and
docs/config.md is generated from them (`markdown()`; tests/test_readme.py keeps the page
equal to it). A new field is one line here and the code that reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ddpm_jax.config import build
from ddpm_jax.core import chain, denoiser, paths, schedules
from ddpm_jax.core import sde as sde_lib
from ddpm_jax.evaluation import inception, protocols
from ddpm_jax.models import layers, ncsnpp, song_unet
from ddpm_jax.models.ncsnpp_layers import ACTIVATIONS, COMBINES
from ddpm_jax.objectives import dsm, flow
from ddpm_jax.objectives import ddpm as ddpm_objective
from ddpm_jax.objectives import rows
from ddpm_jax.samplers import ddim, grids, likelihood, table
from ddpm_jax.training import power_ema


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field: its dotted name, default and help; `check` (value -> bool) with `want`
  (what a valid value is, in the gate's error and the docs), the `choices` it accepts, or for
  a tuple field `elements` = (element test, what the elements are, may be empty, example);
  `read_by`: the runs that read it, for the gate's line on a setting a run does not read,
  where neither the sampler, network and objective tables nor its section's READ_BY say."""
  name: str
  default: Any
  help: str
  check: Callable | None = None
  want: str = ""
  choices: tuple | None = None
  elements: tuple | None = None
  read_by: str = ""


def _positive(v) -> bool:
  return v > 0


def _at_least(low):
  return lambda v: v >= low


def _between(low, high, *, high_included=False):
  return lambda v: low <= v <= high if high_included else low <= v < high


def _positive_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool) and v > 0


MAX_RES_BLOCKS = 64  # residual blocks per level

# What each section configures (docs/config.md's headings).
SECTIONS = {
    "": "Run-wide settings.",
    "data": "The training data: source, split, size (data/sources.py).",
    "diffusion": "The discrete chain of training.objective 'ddpm' (core/schedules.py).",
    "model": "The network (model.name) and its options; each network reads only its own.",
    "sde": "The SDE of training.objective 'dsm', and NCSN's levels (core/sde.py).",
    "classifier": "A noise-conditional classifier (training.objective 'classifier').",
    "edm": "EDM's preconditioning and noise draws (training.objective 'edm').",
    "flow": "Flow matching on a Gaussian path (training.objective 'flow'; core/paths.py).",
    "training": "The training loop, its objective and its cadence.",
    "optim": "Adam with warm-up and gradient clipping (optax).",
    "phema": "--mode phema: the EMA length to reconstruct from post-hoc EMA snapshots.",
    "reflow": "--mode reflow: (noise, sample) pairs of a flow model, to train the next "
              "rectification on (data.dataset 'pairs').",
    "edit": "--mode edit: SDEdit and inpainting.",
    "sampling": "The sampler (sampling.method) and its options; each sampler reads only its own.",
    "eval": "--mode bpd: bits/dim of a data split.",
    "fid": "--mode eval: FID, KID, precision/recall and IS against a reference.",
}

# The runs that read a section's fields (the gate's line, where no table or field says).
READ_BY = {"training": "--mode train", "optim": "--mode train", "edit": "--mode edit",
           "phema": "--mode phema", "eval": "--mode bpd", "fid": "--mode eval",
           "classifier": "training.objective 'classifier'"}

FIELDS = (
    # run-wide
    Field("seed", 0,
          "the run's seed: parameters, batches and every key of the training step",
          check=_at_least(0),
          want="0 or more",
          read_by="--mode train"),
    Field("compilation_cache", "~/.cache/ddpm_jax/jax_compilation_cache",
          "JAX's persistent compilation cache (infra/compile_cache.py): a resumed or repeated "
          "run does not compile again; \"\" turns it off; JAX_COMPILATION_CACHE_DIR, where set, "
          "takes precedence."),
    Field("max_memory", 0.0,
          "GiB a run may use per device (config/memory.py refuses a run whose lower-bound "
          "estimate is larger); 0: each device's memory, or the host's on CPU.",
          check=_at_least(0),
          want="0 (the device's memory) or a number of GiB"),
    # data
    Field("data.dataset", "digits",
          "\"digits\" (embedded), \"npz\", \"folder\", \"pairs\" (--mode reflow's, in "
          "data.path), or a tfds name"),
    Field("data.split", "train", "the split trained on"),
    Field("data.data_dir", "", "tfds data_dir holding the prepared (array_record) dataset"),
    Field("data.path", "",
          "the .npz file, image folder or folder of pairs; \"{split}\" → the split"),
    Field("data.image_size", 32,
          "the side of the square images the network is trained on",
          check=_positive,
          want="a positive number of pixels"),
    Field("data.random_flip", False, "flip each training image horizontally with probability ½",
          read_by="--mode train"),
    Field("data.num_workers", 4,
          "grain processes for sources read per batch (tfds); arrays need none",
          check=_at_least(0),
          want="0 (a thread) or more worker processes",
          read_by="--mode train"),
    Field("data.num_classes", 10,
          "used when model.conditional",
          check=_positive,
          want="a positive number of classes",
          read_by="conditional models (model.conditional=True) and classifiers"),
    # diffusion
    Field("diffusion.beta_schedule", "linear",
          "linear | quadratic | cosine | sigmoid | constant",
          choices=schedules.BETA_SCHEDULES),
    Field("diffusion.beta_start", 1e-4,
          "β_0 of the schedule (linear, quadratic)",
          check=_between(0, 1),
          want="in [0, 1), e.g. 1e-4"),
    Field("diffusion.beta_end", 0.02,
          "β_{T−1} of the schedule (linear, quadratic)",
          check=_between(0, 1),
          want="in [0, 1), e.g. 0.02"),
    Field("diffusion.num_timesteps", 1000,
          "T, the chain's number of steps",
          check=_at_least(2),
          want="at least 2, e.g. 1000"),
    Field("diffusion.zero_terminal_snr", False,
          "rescale the β so that ᾱ_{T−1} = 0 (Lin et al. 2024)"),
    # model
    Field("model.name", "ddpm",
          "ddpm (Ho et al.'s U-Net) | ncsnpp (score_sde's NCSN++/DDPM++) | song_unet (EDM's "
          "DDPM++/NCSN++) | dhariwal_unet (EDM's ADM) | ncsnv2, ncsnv2_deeper, ncsnv2_deepest "
          "(NCSNv2's RefineNets: VE models, ch is ngf) | half_unet (the U-Net's encoder: a "
          "classifier, ADM's)",
          choices=build.NETWORKS),
    Field("model.ch", 128,
          "base channels (score_sde's nf, EDM's model_channels)",
          check=_positive, want="positive, each level (× model.ch_mult) divisible into "
          "GroupNorm's groups"),
    Field("model.ch_mult", (1, 2, 2, 2),
          "channel multiplier of each resolution level (score_sde's ch_mult, EDM's channel_mult)",
          elements=(_positive_int, "positive integer channel multipliers", False, "(1, 2, 2, 2)")),
    Field("model.num_res_blocks", 2,
          "residual blocks per level",
          check=_between(1, MAX_RES_BLOCKS, high_included=True),
          want=f"between 1 and {MAX_RES_BLOCKS} (the published networks use 2 to 8; each block "
               f"is traced in Python, so a huge count would hang the gate before any memory "
               f"estimate)"),
    Field("model.attn_resolutions", (16,),
          "the resolutions with self-attention; () for none",
          elements=(_positive_int, "positive integer resolutions", True, "(16,)")),
    Field("model.dropout", 0.1,
          "dropout probability in the residual blocks (training only)",
          check=_between(0, 1),
          want="in [0, 1)"),
    Field("model.resamp_with_conv", True, "convolutions in the up- and downsampling layers"),
    Field("model.mean_type", "eps", "eps | x0 | v", choices=denoiser.PREDICTIONS[:-1]),
    Field("model.var_type", "fixed_large",
          "fixed_small | fixed_large | learned | learned_range",
          choices=chain.VAR_TYPES),
    Field("model.conditional", False,
          "class labels, with a null label for classifier-free guidance"),
    Field("model.dtype", "float32",
          "compute: float32 | bfloat16 | float16 (dynamic loss scaling); parameters stay float32",
          choices=tuple(build.DTYPES)),
    Field("model.attention", "einsum",
          "einsum | xla | cudnn (jax.nn.dot_product_attention; GPU)",
          choices=layers.ATTENTION),
    Field("model.remat", False, "recompute each residual block in the backward pass (memory)"),
    Field("model.norm_groups", 32,
          "ddpm and half_unet: GroupNorm's groups (DDPM's 32; diffusers' norm_num_groups)",
          check=_positive, want="positive"),
    Field("model.embedding_type", "positional",
          "ncsnpp and song_unet (each network reads only its own options; the gate refuses the "
          "rest) positional | fourier (of the noise input)",
          choices=song_unet.EMBEDDINGS),
    Field("model.fourier_scale", 16.0,
          "ncsnpp: std of the Fourier frequencies",
          check=_positive,
          want="positive, e.g. 16"),
    Field("model.fir", False,
          "ncsnpp (score_sde's names) FIR resampling with fir_kernel (else nearest / average)"),
    Field("model.fir_kernel", (1, 3, 3, 1),
          "ncsnpp: the FIR resampling kernel's taps",
          elements=(_positive_int, "positive integer taps", False, "(1, 3, 3, 1)")),
    Field("model.skip_rescale", True, "residual sums ÷ √2"),
    Field("model.resblock_type", "biggan", "biggan | ddpm", choices=ncsnpp.RESBLOCKS),
    Field("model.progressive", "none", "none | output_skip | residual", choices=ncsnpp.PROGRESSIVE),
    Field("model.progressive_input", "none",
          "none | input_skip | residual",
          choices=ncsnpp.PROGRESSIVE_INPUT),
    Field("model.progressive_combine", "sum", "sum | cat", choices=COMBINES),
    Field("model.init_scale", 0.0,
          "scale of the zero-initialized layers (0: 1e-10)",
          check=_at_least(0),
          want="0 (zero-initialized: 1e-10) or more"),
    Field("model.scale_by_sigma", False, "output ÷ σ (VE score models, Fourier of log σ)"),
    Field("model.nonlinearity", "swish", "swish | elu | relu | lrelu", choices=tuple(ACTIVATIONS)),
    Field("model.channel_mult_noise", 1,
          "song_unet (EDM's names) noise embedding width ÷ ch: 1 DDPM++, 2 NCSN++",
          check=_positive,
          want="at least 1 (1 DDPM++, 2 NCSN++)"),
    Field("model.encoder_type", "standard",
          "standard | skip | residual",
          choices=song_unet.ENCODERS),
    Field("model.decoder_type", "standard", "standard | skip", choices=song_unet.DECODERS),
    Field("model.resample_filter", (1, 1),
          "(1, 1) DDPM++ | (1, 3, 3, 1) NCSN++",
          elements=(_positive_int, "positive integer taps", False, "(1, 3, 3, 1)")),
    Field("model.channel_mult_emb", 4,
          "song_unet and dhariwal_unet embedding width ÷ ch",
          check=_positive,
          want="at least 1, e.g. 4"),
    Field("model.num_heads", 0,
          "dhariwal_unet attention heads at every width (guided-diffusion's --num_heads); "
          "0: channels ÷ 64 (EDM's and --num_head_channels 64)",
          check=_at_least(0), want="0 (64 channels per head) or a head count"),
    Field("model.use_new_attention_order", False,
          "guided-diffusion's flag of the same name: the q, k, v order of the weights "
          "--import_from=adm reads (True for its 64×64 ImageNet model)",
          read_by="--mode import --import_from=adm:FILE"),
    Field("model.augment_dim", 0,
          "augmentation labels fed to the network (9 with training.augment_p)",
          check=_at_least(0),
          want="0 (none) or 9 (EDM's augmentation labels)"),
    # sde
    Field("sde.name", "vp", "vp | subvp | ve", choices=sde_lib.SDE_NAMES),
    Field("sde.beta_min", 0.1, "β(0) of the VP and sub-VP SDEs", check=_positive, want="positive"),
    Field("sde.beta_max", 20.0, "β(1) of the VP and sub-VP SDEs"),
    Field("sde.sigma_min", 0.01,
          "σ(0) of the VE SDE (NCSN: the smallest level)",
          check=_positive,
          want="positive"),
    Field("sde.sigma_max", 50.0, "σ(1) of the VE SDE (NCSN: the largest level)"),
    Field("sde.num_scales", 1000,
          "N of the discretization (NCSN: the number of levels L)",
          check=_at_least(2),
          want="at least 2"),
    Field("sde.train_eps", 1e-5,
          "t ~ U(train_eps, 1)",
          check=_between(0, 1),
          want="in [0, 1), e.g. 1e-5"),
    Field("sde.likelihood_weighting", False,
          "weight the DSM loss by g(t)² (Song et al. 2021: the likelihood bound)"),
    Field("sde.importance_sampling", False,
          "draw t ∝ g(t)²/σ(t)² for the likelihood weighting (lower variance)"),
    Field("sde.reduce", "mean",
          "mean | sum over the pixels of each example",
          choices=dsm.REDUCTIONS),
    # classifier
    Field("classifier.process", "ddpm",
          "the objective of the models it guides: ddpm | dsm | ncsn | edm",
          choices=tuple(o for o in rows.OBJECTIVES if o != "flow")),
    # edm
    Field("edm.sigma_min", 0.002,
          "the σ range of the VE SDE its samplers integrate",
          check=_positive,
          want="positive, e.g. 0.002"),
    Field("edm.sigma_max", 80.0, "the largest σ of EDM's sampling range"),
    Field("edm.sigma_data", 0.5,
          "the data's standard deviation (c_skip, c_out, c_in, λ)",
          check=_between(1e-3, 100, high_included=True),
          want="in [0.001, 100]: the data's standard deviation, e.g. 0.5 for images in [-1, 1] (λ "
     "divides by σ_data²)"),
    Field("edm.p_mean", -1.2, "ln σ ~ N(p_mean, p_std²) in training"),
    Field("edm.p_std", 1.2,
          "the standard deviation of ln σ in training",
          check=_positive,
          want="positive, e.g. 1.2"),
    # reflow
    Field("reflow.num_pairs", 50_000,
          "pairs --mode reflow draws (in batches of sampling.batch_size)",
          check=_positive_int, want="a positive number of pairs"),
    # flow
    Field("flow.path", "linear",
          "linear (α = 1 − t, σ = t: rectified flow) | cosine (α = cos πt/2, σ = sin πt/2)",
          choices=paths.PATH_NAMES),
    Field("flow.prediction", "velocity",
          "what the network predicts: velocity (α' x_0 + σ' ε) | x0",
          choices=denoiser.FLOW_PREDICTIONS),
    Field("flow.time_scale", 1000.0,
          "the network is fed time_scale · t (1000: SD3's; 999: Liu et al.'s code)",
          check=_positive, want="positive, e.g. 1000"),
    Field("flow.t_sampler", "uniform",
          "uniform | logit_normal (SD3) | mode (SD3): how training draws t",
          choices=flow.T_SAMPLERS),
    Field("flow.logit_mean", 0.0, "t = sigmoid(m + s n): its m (logit_normal)"),
    Field("flow.logit_std", 1.0, "its s (logit_normal)", check=_positive, want="positive"),
    Field("flow.mode_scale", 1.29,
          "the scale c of mode sampling (SD3: 1.29)",
          check=_between(-1, flow.MODE_SCALE_MAX, high_included=True),
          want=f"in [-1, {flow.MODE_SCALE_MAX:.4f}] (beyond it t(u) is not monotone)"),
    Field("flow.weighting", "velocity",
          "velocity (flow matching's MSE) | eps | x0 (the same loss weighted as that MSE)",
          choices=flow.WEIGHTINGS),
    # training
    Field("training.objective", "ddpm",
          "ddpm (discrete, config.diffusion) | dsm (config.sde) | ncsn | edm (config.edm) | "
          "flow (config.flow) | classifier (for classifier guidance)",
          choices=tuple(rows.OBJECTIVES) + ("classifier",)),
    Field("training.batch_size", 128,
          "global, over all devices and hosts",
          check=_positive,
          want="a positive global batch size"),
    Field("training.num_train_steps", 800_000,
          "optimizer steps to train for",
          check=_positive,
          want="at least 1"),
    Field("training.loss_type", "simple",
          "simple | vlb | hybrid",
          choices=ddpm_objective.LOSS_TYPES),
    Field("training.vlb_weight", 1e-3,
          "λ of the hybrid loss",
          check=_at_least(0),
          want="0 or more"),
    Field("training.t_sampler", "uniform",
          "uniform | antithetic | importance (p_t ∝ √E[L_t²], objective ddpm)",
          choices=ddpm_objective.TIMESTEP_SAMPLERS),
    Field("training.ema_decay", 0.9999,
          "decay of the parameters' EMA, the weights sampled by default",
          check=_between(0, 1),
          want="in [0, 1), e.g. 0.9999"),
    Field("training.label_dropout", 0.1,
          "for conditional models",
          check=_between(0, 1),
          want="in [0, 1)",
          read_by="--mode train of conditional models"),
    Field("training.augment_p", 0.0,
          "EDM's augmentation probability (0.12 for CIFAR-10); needs model.augment_dim = 9 "
          "(song_unet, dhariwal_unet)",
          check=_between(0, 1, high_included=True),
          want="in [0, 1] (0: off; EDM: 0.12)"),
    Field("training.augment_color", False, "also ADA's colour transforms (model.augment_dim = 15)",
          read_by="--mode train with training.augment_p > 0"),
    Field("training.steps_per_dispatch", 1,
          "training steps per compiled call (lax.scan); divides the every-N settings",
          check=_positive,
          want="at least 1"),
    Field("training.grad_accum_steps", 1,
          "micro-batches per device and step, gradients averaged (memory)",
          check=_positive,
          want="at least 1 (1: no accumulation)"),
    Field("training.loss_scale_init", 2.0**15,
          "model.dtype float16: the dynamic loss scale's start;",
          check=_positive,
          want="positive, e.g. 32768 (2^15)",
          read_by="--mode train with model.dtype 'float16'"),
    Field("training.loss_scale_every", 2000,
          "doubled after this many finite steps, halved on overflow",
          check=_positive,
          want="at least 1, e.g. 2000",
          read_by="--mode train with model.dtype 'float16'"),
    Field("training.log_every", 100,
          "steps between progress lines and metrics rows",
          check=_positive,
          want="at least 1"),
    Field("training.checkpoint_every", 10_000,
          "steps between checkpoints (one is also saved at the end and on SIGTERM/SIGINT)",
          check=_positive,
          want="at least 1"),
    Field("training.keep_checkpoints", 3,
          "checkpoints kept in WORKDIR/checkpoints (the newest always)",
          check=_positive,
          want="at least 1 (the newest checkpoint is always kept)"),
    Field("training.sample_every", 50_000,
          "sample grids during training (0: only at the end)",
          check=_at_least(0),
          want="0 (at the end only) or more"),
    Field("training.phema_sigma_rels", (),
          "Post-hoc EMA (EDM2): power-function EMAs of these lengths σ_rel tracked during "
          "training (e.g. (0.05, 0.10); (): off), saved every phema_every steps and at the end "
          "to WORKDIR/phema_snapshots/, from which --mode phema reconstructs an EMA of any "
          "length."),
    Field("training.phema_every", 10_000,
          "steps between post-hoc EMA snapshots",
          check=_positive,
          want="at least 1 (steps between post-hoc EMA snapshots)",
          read_by="training.phema_sigma_rels (post-hoc EMA's snapshots)"),
    # optim
    Field("optim.learning_rate", 2e-4,
          "Adam's learning rate after warm-up",
          check=_positive,
          want="positive, e.g. 2e-4"),
    Field("optim.warmup_steps", 5000,
          "steps of linear warm-up from 0",
          check=_at_least(0),
          want="0 or more"),
    Field("optim.grad_clip", 1.0,
          "clip the gradient's global norm to this (0: off)",
          check=_at_least(0),
          want="0 (off) or a positive norm"),
    Field("optim.beta1", 0.9, "Adam's β1", check=_between(0, 1), want="in [0, 1)"),
    Field("optim.beta2", 0.999, "Adam's β2", check=_between(0, 1), want="in [0, 1)"),
    Field("optim.eps", 1e-8, "Adam's ε", check=_positive, want="positive"),
    # phema
    Field("phema.sigma_rel", 0.10,
          "the EMA length to reconstruct, in (0, 1/√12]",
          check=lambda v: 0 < v <= power_ema.SIGMA_REL_MAX,
          want=f"in (0, {power_ema.SIGMA_REL_MAX:.4f}] (the EMA length relative to the step; "
               f"1/√12 is a uniform average), e.g. 0.10"),
    Field("phema.step", 0,
          "at this snapshot's step (0: the newest)",
          check=_at_least(0),
          want="0 (the newest snapshot) or a snapshot's step"),
    Field("phema.output", "", "the new workdir (default WORKDIR/phema/sigma_rel<σ>_step<N>)"),
    # edit
    Field("edit.input", "", "an .npz with an 'images' array (and 'labels'), or an image folder"),
    Field("edit.mask", "", "inpainting: an .npz 'mask' or an image, 1 (white) = keep the pixel"),
    Field("edit.t_start", 0.5,
          "SDEdit's t₀/T: noise the inputs to t₀, denoise from there",
          check=lambda v: 0 < v <= 1,
          want="in (0, 1]: the fraction of the process's time T to noise the inputs to"),
    # sampling
    Field("sampling.method", "ddim",
          "ddpm | ddim (objective ddpm); pc (ddpm, dsm, edm); ode | dpm_solver | unipc | edm | "
          "flow_euler | flow_heun | flow_sde (ddpm, dsm, edm, flow); ald (ncsn)",
          choices=tuple(table.SAMPLERS),
          read_by="the modes that sample"),
    Field("sampling.num_steps", 50,
          "ddim, dpm_solver, unipc, edm, flow_* steps; ode steps (euler/heun)",
          check=_positive,
          want="at least 1"),
    Field("sampling.skip_type", "uniform", "uniform | quadratic | trailing"),
    Field("sampling.eta", 0.0,
          "ddim: η, the noise of each step (0: deterministic, 1: DDPM's posterior variance)",
          check=_between(*ddim.ETA, high_included=True),
          want=f"in [{ddim.ETA[0]:g}, {ddim.ETA[1]:g}] (0: deterministic DDIM)"),
    Field("sampling.clip_x0", True,
          "clip every x̂_0 to [-1, 1]: ddpm, ddim, dpm_solver, unipc, edm, ode, flow_*",
          read_by="the samplers that clip (samplers/table.py)"),
    Field("sampling.num_samples", 64,
          "samples written by --mode sample (and train's grids)",
          check=_positive,
          want="at least 1",
          read_by="--mode sample and train's grids"),
    Field("sampling.batch_size", 64,
          "samples per batch of --mode sample and edit",
          check=_positive,
          want="at least 1",
          read_by="--mode sample, edit and reflow"),
    Field("sampling.predictor", "reverse_diffusion",
          "pc: euler_maruyama | reverse_diffusion | ancestral | none"),
    Field("sampling.corrector", "langevin", "pc: langevin | ald | none"),
    Field("sampling.snr", 0.16,
          "pc: the Langevin corrector's signal-to-noise ratio",
          check=_positive,
          want="positive"),
    Field("sampling.n_steps_each", 1,
          "corrector steps per level (pc); steps per σ (ald)",
          check=_positive,
          want="at least 1"),
    Field("sampling.eps", 1e-3,
          "the last t of the reverse process",
          check=_between(0, 1),
          want="in [0, 1), e.g. 1e-3"),
    Field("sampling.denoise", True,
          "SDE samplers end with x̂_0(x, eps) (pc: the last noise-free mean)"),
    Field("sampling.ode_solver", "tsit5", "tsit5 | dopri5 | heun | euler"),
    Field("sampling.rtol", 1e-5,
          "ode: the adaptive solver's relative tolerance",
          check=_positive,
          want="positive"),
    Field("sampling.atol", 1e-5,
          "ode: the adaptive solver's absolute tolerance",
          check=_positive,
          want="positive"),
    Field("sampling.step_lr", 2e-5,
          "ald: ε of α_i = ε σ_i²/σ_L²",
          check=_positive,
          want="positive"),
    Field("sampling.guidance_weight", 0.0,
          "classifier-free guidance w for conditional models",
          check=_at_least(0),
          want="0 (off) or more",
          read_by="conditional models"),
    Field("sampling.classifier_scale", 0.0,
          "classifier guidance s (0: off), with the classifier of",
          check=_at_least(0),
          want="0 (off) or more, e.g. 1.0",
          read_by="--mode sample, eval and edit (train's grids are unguided)"),
    Field("sampling.classifier_workdir", "",
          "this workdir (a training.objective \"classifier\" run)",
          read_by="sampling.classifier_scale > 0"),
    Field("sampling.solver_order", 2, "dpm_solver, unipc: 1 | 2 | 3"),
    Field("sampling.spacing", "",
          "dpm_solver, unipc, edm: time_uniform | logsnr | karras (\"\": logsnr; karras for edm)",
          choices=("",) + grids.SPACINGS),
    Field("sampling.lower_order_final", True,
          "dpm_solver, unipc: end at orders 2, 1 when num_steps < 15"),
    Field("sampling.dpm_solver_variant", "multistep", "multistep (1M/2M/3M) | singlestep (2S)"),
    Field("sampling.dpm_solver_3m", "published",
          "3M's D2 term: published (×1) | taylor (×2, order 3)"),
    Field("sampling.dpm_solver_start", "lower_order",
          "3M: lower_order (orders 1, 2 first) | singlestep (2S, +1)"),
    Field("sampling.unipc_variant", "bh2", "B(h) of UniPC: bh1 | bh2"),
    Field("sampling.unipc_corrector", True,
          "UniC after each step: order + 1 at no extra evaluation"),
    Field("sampling.edm_churn", 0.0,
          "EDM S_churn (0: deterministic Heun); noise only where",
          check=_at_least(0),
          want="0 (deterministic) or more, e.g. 40"),
    Field("sampling.edm_s_tmin", 0.0,
          "S_tmin <= σ <= S_tmax, with σ = σ(t)/α(t)",
          check=_at_least(0),
          want="0 or more"),
    Field("sampling.edm_s_tmax", 1e9, "no upper limit (finite, so config.json stays strict JSON)"),
    Field("sampling.edm_s_noise", 1.0,
          "edm: S_noise, the scale of the churn's noise",
          check=_positive,
          want="positive, e.g. 1.0"),
    Field("sampling.flow_shift", 1.0,
          "flow_*: SD3's time shift t = s u/(1 + (s − 1) u) of the uniform grid (1: none; 3: SD3's)",
          check=_positive, want="positive (1: a uniform grid)"),
    Field("sampling.flow_noise", 1.0,
          "flow_sde: η of the diffusion g(t)² = η σ(t) (SiT's norm η/2; 0: the Euler step)",
          check=_at_least(0), want="0 (deterministic) or more, e.g. 1.0"),
    Field("sampling.use_ema", True, "sample the EMA parameters (False: the raw ones)",
          read_by="the modes that use a trained model's parameters"),
    Field("sampling.seed", 0,
          "the samples' seed (batch i uses fold_in(seed, first index))",
          check=_at_least(0),
          want="0 or more",
          read_by="the modes that sample"),
    # eval
    Field("eval.split", "train", "the embedded digits have one split; \"test\" for tfds data"),
    Field("eval.num_examples", 256,
          "0: the whole split",
          check=_at_least(0),
          want="0 (the whole split) or more"),
    Field("eval.batch_size", 64,
          "images per batch of --mode bpd",
          check=_positive,
          want="at least 1"),
    Field("eval.divergence", "rademacher",
          "rademacher | gaussian | exact (score models)",
          choices=likelihood.DIVERGENCES,
          read_by="--mode bpd of score models"),
    Field("eval.rtol", 1e-5,
          "the probability-flow ODE's relative tolerance (score models)",
          check=_positive,
          want="positive",
          read_by="--mode bpd of score models"),
    Field("eval.atol", 1e-5,
          "the probability-flow ODE's absolute tolerance (score models)",
          check=_positive,
          want="positive",
          read_by="--mode bpd of score models"),
    Field("eval.seed", 0,
          "the seed of the dequantization and the trace estimator's probes",
          check=_at_least(0),
          want="0 or more"),
    # fid
    Field("fid.protocol", "",
          "a paper's protocol (evaluation/protocols.py: ddpm | score_sde | edm | pytorch_fid | "
          "clean_fid) fixes the reference (all of \"train\"), the resize and the seeds; \"\": the "
          "fields below",
          choices=protocols.NAMES),
    Field("fid.num_samples", 50_000, "per seed", check=_positive, want="at least 1"),
    Field("fid.resize", "bilinear",
          "to 299: bilinear | tf1_bilinear | clean_bicubic (inception.py)",
          choices=inception.RESIZES,
          read_by="fid.protocol '' (a protocol fixes its resize)"),
    Field("fid.num_seeds", 1,
          "sampling.seed, +1, …: FID of each, the lowest reported (EDM: 3)",
          check=_positive,
          want="at least 1",
          read_by="fid.protocol '' (a protocol fixes its seeds)"),
    Field("fid.reference_stats", "",
          "a published reference .npz (mu/sigma, or score_sde's pool_3) instead of "
          "fid.ref_split's features"),
    Field("fid.is_splits", 10,
          "the Inception Score's splits (weights with the logits layer)",
          check=_positive,
          want="at least 1 (10 as published)"),
    Field("fid.chunk_size", 512,
          "samples per resumable chunk (a multiple of the devices)",
          check=_positive,
          want="at least 1"),
    Field("fid.inception_batch_size", 256,
          "images per Inception batch",
          check=_positive,
          want="at least 1"),
    Field("fid.inception_weights", "~/.cache/ddpm_jax/inception_fid.npz",
          "docs/command_line.md says how to fill it"),
    Field("fid.ref_split", "test", "the split whose images are the reference (fid.protocol '')",
          read_by="fid.protocol '' without fid.reference_stats (a protocol's reference is "
                  "all of its split)"),
    Field("fid.ref_num_examples", 10_000,
          "0: the whole split",
          check=_at_least(0),
          want="0 (the whole split) or more",
          read_by="fid.protocol '' without fid.reference_stats (a protocol's reference is "
                  "all of its split)"),
    Field("fid.cache_dir", "", "default WORKDIR/fid_cache"),
    Field("fid.kid_subsets", 100,
          "KID's number of random subsets",
          check=_positive,
          want="at least 1"),
    Field("fid.kid_subset_size", 1000,
          "samples and reference images per KID subset",
          check=_at_least(2),
          want="at least 2"),
)
BY_NAME = {f.name: f for f in FIELDS}


def markdown() -> str:
  """docs/config.md: a table per section of every field, its default, what it does and what
  it accepts."""
  def cell(text: str) -> str:
    return text.replace("|", "\\|")

  lines = ["# Configuration", "",
           "Every field of a config, its default and what it does (generated from "
           "ddpm_jax/config/fields.py; `--config.SECTION.FIELD=value` on the command line, "
           "`dj.configs.get(name, **{\"SECTION.FIELD\": value})` from Python)."]
  for section, about in SECTIONS.items():
    lines += ["", f"## {section or 'Run-wide'}", "", about, "",
              "| field | default | what | accepts |", "|---|---|---|---|"]
    for f in FIELDS:
      if f.name.rpartition(".")[0] != section:
        continue
      if f.choices is not None:
        accepts = ", ".join(f"`{c!r}`" for c in f.choices)
      else:
        accepts = f.want or (f"a tuple of {f.elements[1]}" if f.elements else "")
      lines.append(f"| `{f.name}` | `{f.default!r}` | {cell(f.help)} | {cell(accepts)} |")
  return "\n".join(lines) + "\n"

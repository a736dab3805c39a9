"""Bad inputs: the config gate's table (config/validate.py, called directly: one line naming
the field or file and the fix, raised before anything is written), and the command line's
contract through its entry point, in-process (exit status 2, one line on stderr that starts
with "error:", no traceback, an existing workdir untouched, a fresh one never created)."""

import hashlib
import os
import pathlib
import re

import numpy as np
import pytest
from conftest import ROOT, run_cli, tiny_config
from PIL import Image

from ddpm_jax import configs
from ddpm_jax.config import build, fields, load, reads, validate
from ddpm_jax.infra import lock
from ddpm_jax.modes import bpd, edit, evaluate, sample, train
from ddpm_jax.training import checkpoint

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower

DEMO = "--config=configs/demo.py"
DSM, PC = "--config.training.objective=dsm", "--config.sampling.method=pc"

# (id, arguments after the config, what the error line must contain): the gate's table
GATE_TABLE = [
    # ranges, one field at a time
    ("batch_negative", ["--config.training.batch_size=-8"], "training.batch_size=-8 must be"),
    ("checkpoint_every_zero", ["--config.training.checkpoint_every=0"], "training.checkpoint_every=0"),
    ("log_every_zero", ["--config.training.log_every=0"], "training.log_every=0 must be at least 1"),
    ("dispatch_zero", ["--config.training.steps_per_dispatch=0"], "training.steps_per_dispatch=0"),
    ("steps_zero", ["--config.training.num_train_steps=0"], "training.num_train_steps=0"),
    ("keep_zero", ["--config.training.keep_checkpoints=0"], "training.keep_checkpoints=0"),
    ("sample_every_negative", ["--config.training.sample_every=-1"], "training.sample_every=-1"),
    ("ema_above_one", ["--config.training.ema_decay=1.5"], "training.ema_decay=1.5 must be in [0, 1)"),
    ("label_dropout_one", ["--config.training.label_dropout=1.0"], "training.label_dropout=1.0"),
    ("vlb_weight_negative", ["--config.training.vlb_weight=-1.0"], "training.vlb_weight=-1.0"),
    ("lr_negative", ["--config.optim.learning_rate=-0.001"], "optim.learning_rate=-0.001 must be positive"),
    ("lr_zero", ["--config.optim.learning_rate=0.0"], "optim.learning_rate=0.0"),
    ("warmup_negative", ["--config.optim.warmup_steps=-5"], "optim.warmup_steps=-5"),
    ("beta1_one", ["--config.optim.beta1=1.0"], "optim.beta1=1.0 must be in [0, 1)"),
    ("adam_eps_zero", ["--config.optim.eps=0.0"], "optim.eps=0.0 must be positive"),
    ("image_size_zero", ["--config.data.image_size=0"], "data.image_size=0 must be"),
    ("num_classes_zero", ["--config.data.num_classes=0"], "data.num_classes=0"),
    ("timesteps_zero", ["--config.diffusion.num_timesteps=0"], "diffusion.num_timesteps=0 must be"),
    ("beta_end_above_one", ["--config.diffusion.beta_end=1.5"], "diffusion.beta_end=1.5 must be in [0, 1)"),
    ("betas_reversed", ["--config.diffusion.beta_start=0.05"], "diffusion.beta_start=0.05 must be below diffusion.beta_end=0.02"),
    ("channels_not_32", ["--config.model.ch=48"], "model.ch=48 must give levels (× model.ch_mult) that GroupNorm's 32 groups (model.norm_groups) divide, not 48 channels"),
    ("res_blocks_zero", ["--config.model.num_res_blocks=0"], "model.num_res_blocks=0"),
    ("dropout_one", ["--config.model.dropout=1.0"], "model.dropout=1.0 must be in [0, 1)"),
    ("eta_above_one", ["--config.sampling.eta=1.5"], "sampling.eta=1.5 must be in [0, 1]"),
    ("ddim_steps_zero", ["--config.sampling.num_steps=0"], "sampling.num_steps=0 must be at least 1"),
    ("ddim_steps_above_T", ["--config.sampling.num_steps=5000"], "sampling.num_steps=5000 must be at most diffusion.num_timesteps=1000"),
    ("num_samples_zero", ["--config.sampling.num_samples=0"], "sampling.num_samples=0"),
    ("sampling_eps_one", ["--config.sampling.eps=1.0"], "sampling.eps=1.0 must be in [0, 1)"),
    ("guidance_negative", ["--config.sampling.guidance_weight=-1.0"], "sampling.guidance_weight=-1.0"),
    ("solver_order_four", ["--config.sampling.solver_order=4"], "Unknown sampling.solver_order 4; use one of (1, 2, 3)"),
    ("edm_churn_negative", ["--config.sampling.edm_churn=-1.0"], "sampling.edm_churn=-1.0 must be 0"),
    ("edm_sigma_data_zero", ["--config.edm.sigma_data=0.0"], "edm.sigma_data=0.0 must be in [0.001, 100]: the data's standard deviation"),
    ("edm_sigmas_reversed", ["--config.edm.sigma_min=100.0"], "edm.sigma_min=100.0 must be below edm.sigma_max=80.0"),
    ("edm_window_reversed", ["--config.sampling.edm_s_tmin=60.0", "--config.sampling.edm_s_tmax=50.0"], "sampling.edm_s_tmin=60.0 must be below sampling.edm_s_tmax=50.0"),
    ("sde_beta_min_zero", ["--config.sde.beta_min=0.0"], "sde.beta_min=0.0 must be positive"),
    ("sigmas_reversed", ["--config.sde.sigma_min=100.0"], "sde.sigma_min=100.0 must be below sde.sigma_max=50.0"),
    ("eval_batch_zero", ["--config.eval.batch_size=0"], "eval.batch_size=0"),
    ("fid_chunk_zero", ["--config.fid.chunk_size=0"], "fid.chunk_size=0"),
    ("kid_subset_one", ["--config.fid.kid_subset_size=1"], "fid.kid_subset_size=1 must be at least 2"),
    # choices and relations
    ("objective_unknown", ["--config.training.objective=gan"], "Unknown training.objective 'gan'"),
    ("sampler_mismatch", ["--config.training.objective=ncsn"], "sampling.method 'ddim' does not fit training.objective 'ncsn'"),
    ("dtype_unknown", ["--config.model.dtype=float8"], "Unknown model.dtype 'float8'"),
    ("attention_unknown", ["--config.model.attention=flash"], "Unknown model.attention 'flash'"),
    ("spacing_unknown", ["--config.sampling.spacing=uniform"], "Unknown sampling.spacing 'uniform'; use one of ('', 'time_uniform', 'logsnr', 'karras')"),
    ("dpm_variant_unknown", ["--config.sampling.dpm_solver_variant=adaptive"], "Unknown sampling.dpm_solver_variant 'adaptive'"),
    ("unipc_variant_unknown", ["--config.sampling.unipc_variant=bh3"], "Unknown sampling.unipc_variant 'bh3'"),
    ("singlestep_order_three", ["--config.sampling.method=dpm_solver", "--config.sampling.dpm_solver_variant=singlestep", "--config.sampling.solver_order=3"], "singlestep' is DPM-Solver++(2S), of order 2; set sampling.solver_order=2"),
    ("loss_unknown", ["--config.training.loss_type=l1"], "Unknown training.loss_type 'l1'"),
    ("t_sampler_unknown", ["--config.training.t_sampler=sobol"], "Unknown training.t_sampler 'sobol'"),
    ("mean_type_unknown", ["--config.model.mean_type=score"], "mean_type"),
    ("workers_negative", ["--config.data.num_workers=-1"], "data.num_workers=-1"),
    ("dispatch_not_dividing", ["--config.training.steps_per_dispatch=7"], "training.steps_per_dispatch=7 must divide"),
    ("batch_not_dividing", ["--config.training.batch_size=12"], "training.batch_size=12 does not divide over 8 devices"),
    ("size_not_halving", ["--config.data.image_size=9"], "data.image_size=9 is not divisible by 2"),
    # the command line itself
    ("unknown_dataset", ["--config.data.dataset=no_such_dataset"], "Cannot open tfds dataset 'no_such_dataset'"),
]

# Refused by the config gate (config/validate.py) before the workdir is created: the schema's
# choices, a dry build of the sampler, and command-line settings that the run does not read.
GATE_TABLE += [
    ("predictor_unknown", [DSM, PC, "--config.sampling.predictor=foo"], "Unknown sampling.predictor 'foo'"),
    ("predictor_unfit_subvp", [DSM, "--config.sde.name=subvp", PC, "--config.sampling.predictor=ancestral"], "the sub-VP SDE does not have; use predictor 'euler_maruyama'"),
    ("corrector_unknown", [DSM, PC, "--config.sampling.corrector=hmc"], "Unknown sampling.corrector 'hmc'"),
    ("ode_solver_unknown", [DSM, "--config.sampling.method=ode", "--config.sampling.ode_solver=rk99"], "Unknown sampling.ode_solver 'rk99'"),
    ("reduce_unknown", [DSM, "--config.sampling.method=ode", "--config.sde.reduce=max"], "Unknown sde.reduce 'max'"),
    ("divergence_unknown", ["--mode=bpd", "--config.eval.divergence=exactly"], "Unknown eval.divergence 'exactly'"),
    ("eps_zero_vp", [DSM, "--config.sampling.method=dpm_solver", "--config.sampling.eps=0.0"], "eps=0 gives σ(eps) = 0 on this SDE, an infinite log-SNR"),
    ("eta_ignored_by_dpm_solver", ["--config.sampling.method=dpm_solver", "--config.sampling.eta=0.5"], "--config.sampling.eta is read only by sampling.method 'ddim'"),
    ("snr_ignored_by_ddim", ["--config.sampling.snr=0.2"], "--config.sampling.snr is read only by sampling.method 'pc'"),
    ("sde_ignored_by_ddpm", ["--config.sde.beta_max=10.0"], "--config.sde.beta_max is read only by training.objective 'dsm' with sde.name 'vp' / 'subvp'"),
    ("optim_ignored_by_sample", ["--mode=sample", "--config.optim.learning_rate=0.002"], "--config.optim.learning_rate is read only by --mode train"),
    ("dpm_3m_form_unknown", ["--config.sampling.method=dpm_solver", "--config.sampling.dpm_solver_3m=exact"], "Unknown sampling.dpm_solver_3m 'exact'; use one of ('taylor', 'published')"),
    ("dpm_3m_start_unknown", ["--config.sampling.method=dpm_solver", "--config.sampling.dpm_solver_start=warm"], "Unknown sampling.dpm_solver_start 'warm'; use one of ('lower_order', 'singlestep')"),
    # the networks (config.model.name) and their options
    ("network_unknown", ["--config.model.name=unet"], "Unknown model.name 'unet'; use one of ('ddpm', 'ncsnpp', 'song_unet', 'dhariwal_unet', 'ncsnv2', 'ncsnv2_deeper', 'ncsnv2_deepest', 'half_unet')"),
    ("ncsnv2_on_the_chain", ["--config.model.name=ncsnv2"], "model.name 'ncsnv2' is not fed the noise level (its score is F(x)/σ, a VE model's): use training.objective 'ncsn'"),
    ("ncsnv2_options_unread", ["--config.model.name=ncsnv2_deeper", "--config.training.objective=ncsn", "--config.sampling.method=ald", "--config.model.ch_mult=(1,2)"], "--config.model.ch_mult is not read by this run (this run: --mode train, training.objective 'ncsn', sampling.method 'ald', model.name 'ncsnv2_deeper')"),
    ("encoder_unknown", ["--config.model.name=song_unet", "--config.model.encoder_type=deep"], "Unknown model.encoder_type 'deep'; use one of ('standard', 'skip', 'residual')"),
    ("progressive_unknown", ["--config.model.name=ncsnpp", "--config.model.progressive=skip"], "Unknown model.progressive 'skip'; use one of ('none', 'output_skip', 'residual')"),
    ("vlb_weight_ignored_by_simple", ["--config.training.vlb_weight=0.01"], "--config.training.vlb_weight is read only by training.objective 'ddpm' with training.loss_type 'hybrid'"),
    ("seed_ignored_by_sample", ["--mode=sample", "--config.seed=3"], "--config.seed is read only by --mode train"),
    ("fir_ignored_by_song_unet", ["--config.model.name=song_unet", "--config.model.fir=True"], "--config.model.fir is read only by model.name 'ncsnpp'"),
    ("embedding_ignored_by_adm", ["--config.model.name=dhariwal_unet", "--config.model.embedding_type=fourier"], "--config.model.embedding_type is read only by model.name 'ncsnpp' / 'song_unet'"),
    ("ncsnpp_with_labels", ["--config.model.name=ncsnpp", "--config.model.conditional=True"], "model.name 'ncsnpp' has no class labels"),
    ("scale_by_sigma_without_log_sigma", ["--config.model.name=ncsnpp", "--config.model.scale_by_sigma=True"], "model.scale_by_sigma divides by σ = exp(the noise input)"),
    ("augment_without_labels", ["--config.model.name=song_unet", "--config.training.objective=edm", "--config.sampling.method=edm", "--config.training.augment_p=0.12"], "set model.name 'song_unet' or 'dhariwal_unet' with model.augment_dim=9"),
    ("resample_filter_not_taps", ["--config.model.name=song_unet", "--config.model.resample_filter=(1,0.5)"], "model.resample_filter=(1, 0.5) must be a non-empty tuple of positive integer taps"),
    # types and sizes: tuples, finite floats, int32, memory
    ("ch_mult_empty", ["--config.model.ch_mult=()"], "model.ch_mult=() must be a non-empty tuple of positive integer channel multipliers"),
    ("ch_mult_zero", ["--config.model.ch_mult=(1,0)"], "model.ch_mult=(1, 0) must be a non-empty tuple"),
    ("attn_float", ["--config.model.attn_resolutions=(16.5,)"], "model.attn_resolutions=(16.5,) must be a tuple of positive integer resolutions"),
    ("seed_beyond_int32", ["--config.seed=4294967296"], "seed=4294967296 must be at most 2147483647 (int32)"),
    ("beta_max_infinite", [DSM, "--config.sde.beta_max=inf"], "sde.beta_max=inf must be a finite number"),
    ("lr_nan", ["--config.optim.learning_rate=nan"], "optim.learning_rate=nan must be a finite number"),
    ("image_size_huge", ["--config.data.image_size=100000"], "data.image_size=100000 (the 1797 images of data.dataset 'digits' resized in memory) needs at least"),
    ("timesteps_huge", ["--config.max_memory=1.0", "--config.diffusion.num_timesteps=100000000"], "diffusion.num_timesteps=100000000 needs at least 23.8 GiB and max_memory=1 is 1 GiB"),
    ("train_batch_huge", ["--config.max_memory=1.0", "--config.training.batch_size=1048576"], "training.batch_size=1048576 with data.image_size=8 and model.ch=32"),
    ("sample_batch_huge", ["--mode=sample", "--config.max_memory=1.0", "--config.sampling.batch_size=8388608"], "sampling.batch_size=8388608 with data.image_size=8"),
    ("sample_count_huge", ["--mode=sample", "--config.max_memory=1.0", "--config.sampling.num_samples=100000000"], "sampling.num_samples=100000000 of 8×8×1 images (gathered into one .npz) needs at least 11.9 GiB and max_memory=1 is 1 GiB; sample fewer"),
    ("fid_count_huge", ["--mode=eval", "--config.max_memory=1.0", "--config.fid.num_samples=1000000"], "fid.num_samples=1000000 (2048 Inception features each) needs at least 7.63 GiB and max_memory=1 is 1 GiB"),
    ("res_blocks_huge", ["--config.model.num_res_blocks=100000"], "model.num_res_blocks=100000 must be between 1 and 64"),
    ("edm_draws_overflow", ["--config.training.objective=edm", "--config.sampling.method=edm", "--config.edm.p_std=30.0"], "edm.p_mean=-1.2 and edm.p_std=30 draw ln σ beyond ±40"),
    ("edm_sigma_data_tiny", ["--config.training.objective=edm", "--config.sampling.method=edm", "--config.edm.sigma_data=1e-30"], "edm.sigma_data=1e-30 must be in [0.001, 100]"),
    ("attn_resolution_never_reached", ["--config.model.attn_resolutions=(3,)"], "model.attn_resolutions=(3,) names 3, a resolution this U-Net never has (data.image_size=8 over 2 levels: (8, 4)); use some of those, or () for no attention"),
    ("phema_length_too_long", ["--config.training.phema_sigma_rels=(0.05,0.5)"], "training.phema_sigma_rels=(0.05, 0.5) must be a tuple of distinct EMA lengths"),
]

# The command line's own contract: flags and their parsing, and two of the gate's lines as
# the command line prints them.
CLI_CASES = [
    ("batch_zero", ["--config.training.batch_size=0"], "training.batch_size=0 must be a positive"),
    ("labels_beyond_classes", ["--config.model.conditional=True", "--config.data.num_classes=5"], "go up to 9, beyond data.num_classes=5; set data.num_classes=10"),
    ("unknown_field", ["--config.training.batch_sise=8"], "unknown config field batch_sise"),
    ("bad_value_type", ["--config.training.batch_size=abc"], "batch_size"),
    ("unknown_mode", ["--mode=fit"], "mode"),
    ("process_id_alone", ["--process_id=1"], "need --distributed"),
    ("extra_argument", ["extra"], "unexpected argument 'extra'; options are --flag=value"),
    ("distributed_alone", ["--distributed"], "--distributed could not join the run ("),
    ("distributed_nobody_there", ["--distributed", "--coordinator_address=127.0.0.1:9", "--num_processes=2", "--process_id=1", "--distributed_timeout=1"], "no coordinator answered at 127.0.0.1:9 within 1s"),
    ("ch_mult_scalar", ["--config.model.ch_mult=2"], "--config.model.ch_mult=2 is a tuple field; write it as one, e.g. --config.model.ch_mult='(2,)'"),
    ("attn_scalar", ["--config.model.attn_resolutions=16"], "--config.model.attn_resolutions=16 is a tuple field"),
]

# (id, file to write, what the error line must contain); arguments use {path}
FILE_CASES = [
    ("npz_missing", None, ["--config.data.dataset=npz", "--config.data.path={dir}/none.npz"], "No .npz file at"),
    ("npz_5d", {"images": np.zeros((2, 8, 8, 1, 1), np.uint8)}, None, "it must be [N, H, W] or [N, H, W, C]"),
    ("npz_2d", {"images": np.zeros((2, 8), np.uint8)}, None, "'images' has shape (2, 8)"),
    ("npz_two_channels", {"images": np.zeros((2, 8, 8, 2), np.uint8)}, None, "with C 1 or 3"),
    ("npz_float", {"images": np.zeros((2, 8, 8), np.float32)}, None, "'images' must be uint8"),
    ("npz_no_images", {"x": np.zeros((2, 8, 8), np.uint8)}, None, "has no 'images' array"),
    ("npz_objects", {"images": np.array([object()] * 2)}, None, "refused for safety"),
    ("npz_short_labels", {"images": np.zeros((4, 8, 8), np.uint8), "labels": np.arange(3)}, None, "one per image (4)"),
    ("npz_negative_labels", {"images": np.zeros((2, 8, 8), np.uint8), "labels": np.array([0, -1])}, None, "labels must be 0 or more"),
    ("npz_not_a_zip", b"not a zip file", None, "is not an .npz file (not a zip archive)"),
    ("npz_truncated_zip", b"PK\x03\x04 and then nothing", None, "is not a readable .npz file"),
    ("folder_missing", None, ["--config.data.dataset=folder", "--config.data.path={dir}/none"], "No image folder at"),
    ("folder_truncated_png", "truncated", ["--config.data.dataset=folder", "--config.data.path={dir}/images"], "images/b.png"),
    ("folder_transparent_png", "transparent", ["--config.data.dataset=folder", "--config.data.path={dir}/images"], "images/a.png has transparent pixels (RGBA); flatten it"),
    ("mask_not_a_zip", b"not a zip file", ["--mode=edit", "--config.sampling.num_steps=2", "--config.edit.input={dir}/images.npz", "--config.edit.mask={dir}/data.npz"], "edit.mask: {dir}/data.npz is not an .npz file (not a zip archive); save the mask with numpy.savez"),
    ("reference_stats_of_objects", {"mu": np.array([object()] * 2)}, ["--mode=eval", "--config.sampling.num_steps=2", "--config.fid.inception_weights={dir}/data.npz", "--config.fid.reference_stats={dir}/data.npz"], "fid.reference_stats: {dir}/data.npz holds Python objects, refused for safety (loading them could run code)"),
]

# (id, file to write or None, arguments, what the error line must contain): files read by the
# command line's parsing (config files) or by the mode after the gate (the Inception weights)
CLI_FILE_CASES = [
    ("inception_weights_not_a_zip", b"not a zip file", ["--mode=eval", "--config.sampling.num_steps=2", "--config.fid.inception_weights={dir}/data.npz"], "fid.inception_weights: {dir}/data.npz is not an .npz file (not a zip archive); convert pytorch-fid's"),
    ("inception_of_another_network", {"conv.weight": np.zeros((3, 3, 3, 3), np.float32)}, ["--mode=eval", "--config.sampling.num_steps=2", "--config.fid.inception_weights={dir}/data.npz"], "holds other weights than the FID Inception-v3's (params.conv.kernel: file (3, 3, 3, 3) vs network (3, 3, 3, 32)"),
    ("config_syntax_error", "def get_config(:\n", ["--config={dir}/c.py"], "line 1: invalid syntax"),
    ("config_import_error", "import nosuchmodule\n", ["--config={dir}/c.py"], "line 1: ModuleNotFoundError"),
    ("config_without_get_config", "x = 1\n", ["--config={dir}/c.py"], "defines no get_config()"),
    ("config_not_a_configdict", "def get_config():\n  return 5\n", ["--config={dir}/c.py"], "get_config() returned a value of type int, not an ml_collections.ConfigDict"),
    ("config_missing", None, ["--config={dir}/none.py"], "no config file"),
    ("config_by_name_bad_field", None, ["--config=demo", "--config.training.batch_size=0"], "training.batch_size=0 must be a positive"),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir holding two checkpoints (steps 0 and 1 of the tiny config), shared by every
  case."""
  path = tmp_path_factory.mktemp("bad_inputs") / "run"
  config = tiny_config()
  source = build.source(config)
  shape = build.image_shape(config, source)
  state = build.train_state(config, build.model(config, shape[-1]), shape)
  manager = checkpoint.make_manager(str(path / "checkpoints"))
  for step in (0, 1):
    checkpoint.save(manager, state.replace(step=step))
  return path


def _snapshot(path: pathlib.Path) -> dict:
  """Every file of the workdir, by content: a refused run changes nothing in it."""
  return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(path.rglob("*")) if p.is_file()}


def _check(args, expected, workdir, capsys, monkeypatch) -> str:
  before = _snapshot(workdir)
  code, err = run_cli([*args, f"--workdir={workdir}"], capsys, monkeypatch)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
  assert expected in lines[0], lines[0]
  assert "Traceback" not in err
  assert _snapshot(workdir) == before
  return lines[0]


# What each mode's own code reads (modes/*.py), as the command line passes it to the gate.
MODE_READS = {"train": train.reads, "sample": lambda c: sample.READS, "bpd": lambda c: bpd.READS,
              "edit": lambda c: edit.READS, "eval": lambda c: evaluate.READS}


def _gate_error(args) -> str:
  """The config gate's one line for the demo config with these command-line settings
  (config/load.py parses them as --config.a.b=value does), called directly."""
  config, mode, names = configs.get("demo"), "train", []
  for arg in args:
    if arg.startswith("--mode="):
      mode = arg.partition("=")[2]
    else:
      assert arg.startswith("--config."), arg
      names += load.override(config, [arg[len("--config."):]])
  with pytest.raises((ValueError, FileNotFoundError)) as refused:
    validate.validate(config, mode, names, MODE_READS.get(mode, lambda c: ())(config))
  message = str(refused.value)
  assert "\n" not in message and "Traceback" not in message
  return message


def test_a_run_that_does_not_sample_needs_no_sampler_that_fits():
  """--mode import of an EDM network with the demo's DDIM: nothing samples, so nothing asks
  for sampling.method (which it would then refuse as unread); training, which samples grids,
  does."""
  config = configs.get("demo", **{"training.objective": "edm"})
  validate.validate(config, "import")
  with pytest.raises(ValueError, match="sampling.method 'ddim' does not fit training.objective "
                                       "'edm'"):
    validate.validate(config, "train")


def test_the_gate_records_the_fields_the_build_reads():
  """Plan.reads is what the dry build read (config/reads.py) and the mode declares: the VE
  SDE's σ range and not the VP's β, the hybrid loss's weight only with that loss, the
  sampler's own options only, a section handed on whole (to_dict) as all of its fields."""
  config = configs.get("demo", **{"training.objective": "dsm", "sde.name": "ve",
                                  "sampling.method": "pc"})
  read = validate.validate(config, "train", None, train.reads(config)).reads
  assert {"sde.sigma_min", "sde.sigma_max", "sampling.snr", "training.log_every",
          "optim.learning_rate"} <= read
  assert not {"sde.beta_min", "training.vlb_weight", "sampling.eta"} & read
  assert "optim.learning_rate" not in validate.validate(config, "sample").reads
  hybrid = configs.get("demo", **{"training.loss_type": "hybrid", "model.var_type": "learned_range"})
  assert "training.vlb_weight" in validate.validate(hybrid, "train").reads
  recorder = reads.Recorder(config)
  recorder.model.to_dict()
  assert recorder.seen == {f"model.{name}" for name in config.model}
  assert reads.peek(recorder, "sde.name") == "ve" and "sde.name" not in recorder.seen


@pytest.mark.parametrize("case_id,args,expected", GATE_TABLE, ids=[c[0] for c in GATE_TABLE])
def test_the_gate_refuses_a_bad_config_in_one_line(case_id, args, expected):
  assert expected in _gate_error(args)


@pytest.mark.parametrize("case_id,args,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_bad_command_line_is_a_one_line_error(case_id, args, expected, workdir, capsys,
                                                monkeypatch):
  _check([DEMO, *args], expected, workdir, capsys, monkeypatch)


@pytest.mark.parametrize("args", [[DSM, PC, "--config.sampling.predictor=foo"],
                                  ["--config.sampling.snr=0.2"]])
def test_the_gate_refuses_before_anything_is_written(args, tmp_path, capsys, monkeypatch):
  """Through the command line: a fresh workdir is never created (so no config.json, no
  checkpoint, no training step), and the line is the gate's."""
  fresh = tmp_path / "run"
  code, err = run_cli([DEMO, *args, f"--workdir={fresh}"], capsys, monkeypatch)
  lines = err.strip().splitlines()
  assert code == 2 and lines == [f"error: {_gate_error(args)}"], err
  assert not fresh.exists()


def test_an_unusable_compilation_cache_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch):
  """A file (or a folder under a file) given as config.compilation_cache: one line naming
  the field and '' to turn it off; no workdir and no cache folder created. (The tests' own
  cache, JAX_COMPILATION_CACHE_DIR, takes precedence over the field: unset here.)"""
  from ddpm_jax.infra import compile_cache
  monkeypatch.delenv(compile_cache.ENV)
  (tmp_path / "file").write_text("x")
  fresh = tmp_path / "run"
  for cache in (tmp_path / "file", tmp_path / "file" / "cache"):
    code, err = run_cli([DEMO, f"--config.compilation_cache={cache}", f"--workdir={fresh}"],
                        capsys, monkeypatch)
    assert code == 2 and err.strip() == (
        f"error: compilation_cache='{cache}' cannot be used ({tmp_path / 'file'} is a file); "
        f"set --config.compilation_cache to a writable folder, or '' to compile without the "
        f"cache."), err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
  compile_cache.check(str(tmp_path / "new" / "cache"))  # creatable: accepted, not created
  compile_cache.check("gs://bucket/cache")  # a URL is JAX's to open
  compile_cache.check("")  # off
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_second_writer_is_refused_naming_the_first(workdir, capsys, monkeypatch):
  """The workdir's lock held by a live run (this process): train is refused in one line, the
  workdir (lock included) unchanged."""
  with lock.WorkdirLock(str(workdir), "the first run"):
    err = _check([DEMO, "--config.training.num_train_steps=2"], "is being written by another "
                 f"run, pid {os.getpid()} on host", workdir, capsys, monkeypatch)
  assert "(since " in err and "the first run" in err and "use another --workdir" in err


def test_training_a_run_already_past_its_steps_says_so_and_writes_nothing(workdir, capsys,
                                                                          monkeypatch):
  """The fixture's checkpoints are at steps 0 and 1: with num_train_steps=1 there is nothing
  to do, which is said (exit 0), and nothing is written (config.json included)."""
  before, said = _snapshot(workdir), []
  monkeypatch.setattr(train, "log", said.append)
  code, _ = run_cli([DEMO, "--config.model.ch_mult=(1,)", "--config.training.num_train_steps=1",
                     f"--workdir={workdir}"], capsys, monkeypatch)
  assert code == 0 and _snapshot(workdir) == before
  assert said[-1] == (f"Nothing to train: {workdir} is at step 1, at training.num_train_steps="
                      f"1; raise it to train further (nothing was written).")


def test_an_empty_workdir_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code, err = run_cli([f"--config={ROOT / 'configs' / 'demo.py'}", "--workdir="], capsys,
                      monkeypatch)
  assert code == 2 and err.strip() == ("error: --workdir is empty; give the run's directory, "
                                       "e.g. --workdir=runs/demo.")
  assert not list(tmp_path.iterdir())


def test_a_nan_names_the_objectives_own_settings(tmp_path):
  """The NaN of a bad EDM setting is not blamed on the learning rate alone."""
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  with pytest.raises(train.NonFiniteLossError) as e:
    train._finite_metrics({"loss": np.nan}, 3, manager, train.nan_hint("edm"))
  assert str(e.value).endswith("Lower optim.learning_rate, or check the data and the noise "
                               "draws (edm.sigma_data, edm.p_mean, edm.p_std).")
  assert all(train.nan_hint(name) for name in fields.BY_NAME["training.objective"].choices)


def test_a_refused_config_leaves_an_existing_runs_config_json_alone(workdir, capsys,
                                                                    monkeypatch):
  saved = workdir / "config.json"
  saved.write_text('{"the": "config this run was trained with"}')
  _check([DEMO, DSM, PC, "--config.sampling.predictor=foo"], "Unknown sampling.predictor",
         workdir, capsys, monkeypatch)
  assert saved.read_text() == '{"the": "config this run was trained with"}'


def test_an_override_equal_to_the_config_files_value_is_not_refused(tmp_path, capsys,
                                                                     monkeypatch):
  """demo.py's sampling.eta is its own value: restating it is not a setting the run ignores
  (the run then fails later, for the missing checkpoint)."""
  code, err = run_cli([DEMO, "--mode=sample", "--config.sampling.method=ddim",
                        f"--workdir={tmp_path}"], capsys, monkeypatch)
  assert code == 2 and "No checkpoint in" in err, err


def _write_case_files(content, args, tmp_path) -> list[str]:
  """Writes the case's file (an .npz, bytes, an image folder, a config file) and returns its
  arguments with {dir} filled in."""
  if args is None:  # an .npz dataset
    args = ["--config.data.dataset=npz", "--config.data.path={dir}/data.npz"]
  if isinstance(content, dict):
    np.savez(tmp_path / "data.npz", **content)
  elif isinstance(content, bytes):
    (tmp_path / "data.npz").write_bytes(content)
  elif content == "transparent":
    (tmp_path / "images").mkdir()
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "images" / "a.png")
  elif content == "truncated":
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    png = (tmp_path / "images" / "a.png").read_bytes()
    (tmp_path / "images" / "b.png").write_bytes(png[:len(png) // 2])
  elif isinstance(content, str):
    (tmp_path / "c.py").write_text(content)
  if any("{dir}/images.npz" in a for a in args):  # the images an edit's mask is for
    np.savez(tmp_path / "images.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
  return [a.format(dir=tmp_path) for a in args]


@pytest.mark.parametrize("case_id,content,args,expected", FILE_CASES,
                         ids=[c[0] for c in FILE_CASES])
def test_a_bad_file_is_a_one_line_error_naming_it(case_id, content, args, expected, tmp_path):
  args = _write_case_files(content, args, tmp_path)
  assert expected.replace("{dir}", str(tmp_path)) in _gate_error(args)


@pytest.mark.parametrize("case_id,content,args,expected", CLI_FILE_CASES,
                         ids=[c[0] for c in CLI_FILE_CASES])
def test_a_bad_file_read_outside_the_gate_is_a_one_line_error_naming_it(
    case_id, content, args, expected, workdir, capsys, monkeypatch, tmp_path):
  args = _write_case_files(content, args, tmp_path)
  config = [] if any(a.startswith("--config=") for a in args) else [DEMO]
  _check([*config, *args], expected.replace("{dir}", str(tmp_path)), workdir, capsys,
         monkeypatch)


def test_a_nan_loss_without_any_checkpoint_says_so(tmp_path):
  config = tiny_config(**{"optim.learning_rate": 1e38, "training.checkpoint_every": 4})
  with pytest.raises(train.NonFiniteLossError, match="there is no checkpoint yet"):
    train.train_and_evaluate(config, str(tmp_path))


def test_sampling_without_a_checkpoint_says_to_train_first(tmp_path, capsys, monkeypatch):
  code, err = run_cli([DEMO, "--mode=sample", f"--workdir={tmp_path}"], capsys, monkeypatch)
  assert code == 2 and err.strip() == (f"error: No checkpoint in {tmp_path}/checkpoints; train "
                                       f"first with --mode train and the same --workdir.")


@pytest.mark.parametrize("mode,field", [("sample", "model.ch=64"),
                                        ("train", "model.conditional=True"),
                                        ("sample", "model.var_type=learned")])
def test_a_checkpoint_of_another_config_is_called_intact_and_the_differences_named(
    mode, field, workdir, capsys, monkeypatch):
  """The workdir holds the tiny config's checkpoints (one level); one model field differs.
  The error names the arrays and never suggests discarding the checkpoint."""
  err = _check([DEMO, f"--mode={mode}", "--config.model.ch_mult=(1,)", f"--config.{field}"],
               "is intact but was written by a different model config", workdir, capsys,
               monkeypatch)
  assert re.search(r"config: (ema_)?params/\w+(/\w+)*: (checkpoint \([\d, ]+\) vs config "
                   r"\([\d, ]+\)|not in the checkpoint)", err), err
  assert "Run with the config it was trained with" in err
  assert not re.search("aside|delet|remov|afresh|damaged|cannot be read", err), err


@pytest.mark.slow
def test_damaged_checkpoints_give_their_lines_and_no_thread_tracebacks(workdir, tmp_path):
  """Both steps' OCDBT manifests garbled: --mode sample (a process of its own, as users run
  it) prints one warning per step and the one error line: none of the tracebacks of
  "Event loop is closed" that the reads left pending printed from tensorstore's threads."""
  import shutil
  import subprocess
  import sys
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  for step in (0, 1):
    (run / "checkpoints" / str(step) / "default" / "manifest.ocdbt").write_bytes(b"garbage")
  done = subprocess.run(
      [sys.executable, "-m", "ddpm_jax.main", DEMO, f"--workdir={run}", "--mode=sample",
       "--config.model.ch_mult=(1,)", "--config.sampling.num_samples=8"],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 2 and lines[-1].startswith("error: None of the checkpoints"), lines
  assert len(lines) == 3 and all("cannot be read" in line for line in lines[:2]), lines


def test_mismatches_lists_shapes_and_missing_arrays():
  saved = {"params": {"a": np.zeros((2, 3)), "b": np.zeros(4)}, "step": np.zeros(())}
  wanted = {"params": {"a": np.zeros((2, 5)), "c": np.zeros(1)}, "step": np.zeros(())}
  assert checkpoint.mismatches(saved, wanted) == [
      "params/a: checkpoint (2, 3) vs config (2, 5)", "params/c: not in the checkpoint",
      "params/b: not in the config"]


def test_a_failed_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
  config = tiny_config()
  source = build.source(config)
  shape = build.image_shape(config, source)
  state = build.train_state(config, build.model(config, shape[-1]), shape)
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  checkpoint.save(manager, state.replace(step=5))

  def full(*_, **__):  # a disk that fills up as orbax writes, after the check for room
    (tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-123").mkdir()
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(manager, "save", full)
  with pytest.raises(checkpoint.DiskFullError) as failure:
    checkpoint.save(manager, state.replace(step=6))
  message = str(failure.value)
  assert "\n" not in message and message.startswith("disk full: checkpoint step 6 in ")
  assert "previous checkpoint (step 5) is intact" in message
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["5"]  # tmp removed
  restored = checkpoint.restore_latest(checkpoint.make_manager(str(tmp_path / "checkpoints")),
                                       state)
  assert int(restored.step) == 5


def test_config_overrides_without_absl_name_an_unknown_field():
  """config/load.py, the --set of the benchmarks: the same one line as the command line's."""
  from ddpm_jax.config import load
  config = tiny_config()
  assert load.override(config, ["sampling.eta=0.5", "data.path=x.npz"]) == [
      "sampling.eta", "data.path"]
  assert config.sampling.eta == 0.5 and config.data.path == "x.npz"  # literal, else string
  for name in ("sampling.etta", "samplng.eta", "seed.x"):
    with pytest.raises(ValueError, match=rf"^unknown config field '{name}' \(the fields are in "
                                         rf"docs/config.md\)$"):
      load.override(config, [f"{name}=1"])

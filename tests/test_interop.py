"""Published weights in and ours out (ddpm_jax/interop/): each format's files, made from
random weights with the reference library's names, load onto this library's network with the
reference's outputs; an export is what diffusers reads; a mismatch or a pickle is one line.

Fixtures, made once outside the project (tests/fixtures/make_*.py):
  diffusers.{json,npz}           HF diffusers 0.42.1 UNet2DModel: configs as diffusers writes
                                 them, state-dict names and shapes, outputs; what diffusers
                                 reads back from this library's export (checked there to give
                                 bit-equal outputs in UNet2DModel and DDPMPipeline)
  ncsnpp.{json,npz}              yang-song/score_sde (Flax), including its uncentered VE setting
  score_sde_pytorch.{json,npz}   yang-song/score_sde_pytorch, names in state-dict order
  diffusers_ncsnpp.{json,npz}    diffusers' NCSN++ (UNet2DModel, Fourier time, Skip blocks), the
                                 same function as score_sde_pytorch's NCSNpp (checked there)
  score_sde_ddpm{,_flax}.json    score_sde_pytorch's DDPM (models/ddpm.py), and the Flax tree's
  score_sde_ddpm.npz             names of score_sde's (run on the same weights, 1.7e-6 apart)
  edm_networks.{json,npz}        NVlabs/edm SongUNet / DhariwalUNet
  edm_precond.{json,npz}         NVlabs/edm VPPrecond / VEPrecond around SongUNet: D(x, σ)
  adm.{json,npz}                 openai/guided-diffusion UNetModel (checked there against EDM's
                                 DhariwalUNet with the same weights, 1.2e-6 relative)
  ncsnv2.{json,npz}              ermongroup/ncsnv2's NCSNv2, NCSNv2Deeper, NCSNv2Deepest (and a
                                 numpy forward written from its spec, 1.5e-6 apart)
  torch_saves/*.{pt,npz}         torch 2.14 torch.save files (dtypes, views, a checkpoint) and
                                 the arrays torch held
The weights are not stored: reference_weights.random_state_dict draws them again.
"""

import functools
import json
import os
import pickle
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, run_cli
from flax import serialization, traverse_util
from safetensors.numpy import load_file, save_file

from ddpm_jax.config import build, defaults, load, weights
from ddpm_jax.interop import diffusers, score_sde, tensors, torch_files

pytestmark = pytest.mark.usefixtures("cheap_compile")
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(FIXTURES))
from reference_weights import random_state_dict  # noqa: E402

DIFFUSERS = json.loads((FIXTURES / "diffusers.json").read_text())
# norm_num_groups 8 and 16 (tests/fixtures/make_diffusers_groups.py)
GROUPS = json.loads((FIXTURES / "diffusers_groups.json").read_text())


def _arrays(stem: str, name: str) -> dict:
  with np.load(FIXTURES / f"{stem}.npz") as z:
    return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}


def _first_quick(cases) -> list:
  """The cases' names, all but the first in the slow tier (each compiles its own network)."""
  names = sorted(cases)
  return names[:1] + [pytest.param(n, marks=pytest.mark.slow) for n in names[1:]]


def _rel_err(out, want) -> float:
  return float(np.abs(np.asarray(out) - want).max() / np.abs(want).max())


def _diffusers_folder(tmp_path, name: str, legacy_names: bool = False, cases=DIFFUSERS):
  """A UNet2DModel folder as diffusers' save_pretrained writes it, with the case's weights
  (under the pre-0.15 attention names with `legacy_names`, as the google/ddpm-* files have)."""
  entry = cases["cases"][name]
  state = random_state_dict(entry["shapes"], entry["seed"])
  if legacy_names:
    new = {v: k for k, v in diffusers.OLD_ATTENTION.items()}
    state = {".".join(new.get(p, p) if "attentions" in k else p for p in k.split(".")): v
             for k, v in state.items()}
    assert any(".query." in k for k in state)
  folder = tmp_path / name
  folder.mkdir()
  save_file(state, str(folder / diffusers.WEIGHTS))
  (folder / "config.json").write_text(json.dumps(entry["config"]))
  (folder / "scheduler_config.json").write_text(json.dumps(entry["scheduler_config"]))
  return folder


@pytest.mark.parametrize("name", sorted(DIFFUSERS["cases"]))
def test_a_diffusers_folder_gives_diffusers_outputs(tmp_path, name):
  legacy = name == "attention_at_4"
  config, params = weights.load_diffusers(str(_diffusers_folder(tmp_path, name, legacy)))
  arrays = _arrays("diffusers", name)
  out = weights.network_fn(config, arrays["x"].shape[-1])(params, arrays["x"],
                                                          arrays["t"].astype(np.float32))
  assert _rel_err(out, arrays["out"]) <= 1e-5
  if name == "learned_range_three_levels":  # the scheduler's fields came along
    assert (config.model.var_type, config.diffusion.beta_schedule, config.sampling.clip_x0) == (
        "learned_range", "cosine", False)


@pytest.mark.parametrize("name", sorted(GROUPS["cases"]))
def test_a_unet_of_8_or_16_groups_gives_diffusers_outputs(tmp_path, name):
  """diffusers' norm_num_groups is model.norm_groups; the export writes it back."""
  config, params = weights.load_diffusers(str(_diffusers_folder(tmp_path, name, cases=GROUPS)))
  assert config.model.norm_groups == GROUPS["cases"][name]["config"]["norm_num_groups"]
  arrays = _arrays("diffusers_groups", name)
  out = weights.network_fn(config)(params, arrays["x"], arrays["t"].astype(np.float32))
  assert _rel_err(out, arrays["out"]) <= 1e-5
  weights.save_diffusers(config, params, str(tmp_path / "out"))
  written = json.loads((tmp_path / "out" / "unet" / "config.json").read_text())
  assert written["norm_num_groups"] == config.model.norm_groups


def test_a_bare_unet_folder_takes_its_schedule_from_the_config(tmp_path, capsys):
  """What unet.save_pretrained(dir) writes (no scheduler config): refused alone, naming the
  way out; with a config, loaded with the config's schedule (said in the log)."""
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  (folder / "scheduler_config.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"No scheduler_config.json .*give a config that "
                                              r"states them"):
    weights.load_diffusers(str(folder))
  stated = load.load(str(ROOT / "configs" / "cifar10_ddpm.py"))
  stated.diffusion.beta_schedule = "cosine"
  config, params = weights.load_diffusers(str(folder), stated)
  assert config.diffusion.beta_schedule == "cosine" and config.model.ch == 32
  assert "has no scheduler config: its β schedule, prediction and variance are the config's " \
         "(diffusion.beta_schedule='cosine'" in capsys.readouterr().out
  arrays = _arrays("diffusers", "attention_at_4")
  out = weights.network_fn(config)(params, arrays["x"], arrays["t"].astype(np.float32))
  assert _rel_err(out, arrays["out"]) <= 1e-5


@pytest.mark.parametrize("damage,match", [
    ("nan", r"tensor conv_in.weight holds 1 NaN or infinite values"),
    ("no_levels", r"block_out_channels=\[\] is not a list of channel counts"),
    ("groups", r"norm_num_groups=12 is not supported .*a divisor of every channel count"),
])
def test_a_damaged_diffusers_folder_is_refused_in_one_line(tmp_path, damage, match):
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  if damage == "nan":
    state = load_file(str(folder / diffusers.WEIGHTS))
    state["conv_in.weight"][0, 0, 0, 0] = np.nan
    save_file(state, str(folder / diffusers.WEIGHTS))
  else:
    content = json.loads((folder / "config.json").read_text())
    if damage == "no_levels":
      content["block_out_channels"] = []
    else:
      content["norm_num_groups"] = 12
    (folder / "config.json").write_text(json.dumps(content))
  with pytest.raises(tensors.FormatError, match=match):
    weights.load_diffusers(str(folder))


@pytest.mark.parametrize("what,match", [
    ("folder", r"is a folder; pass the weights file itself"),
    ("empty", r"is not an .npz file \(not a zip archive\); save plain arrays"),
    ("cut", r"is not a readable .npz file"),
])
def test_an_unreadable_weights_file_is_refused_in_one_line(tmp_path, what, match):
  path = tmp_path / "w.npz"
  if what == "folder":
    path.mkdir()
  elif what == "empty":
    path.write_bytes(b"")
  else:
    np.savez(path, a=np.ones(1000, np.float32))
    path.write_bytes(path.read_bytes()[:300])
  with pytest.raises(tensors.FormatError, match=match):
    tensors.read(str(path))
  if what == "folder":
    with pytest.raises(tensors.FormatError, match=r"is a folder; pass a score_sde checkpoint"):
      score_sde.read_flax(str(path))


@pytest.mark.parametrize("name", sorted(DIFFUSERS["cases"]))
def test_an_export_is_what_diffusers_reads_and_comes_back_bit_exact(tmp_path, name):
  entry = DIFFUSERS["cases"][name]
  config, params = weights.load_diffusers(str(_diffusers_folder(tmp_path, name)))
  out = tmp_path / "export"
  weights.save_diffusers(config, params, str(out))  # the channels read from the parameters
  # the configs hold every field diffusers read from the export (make_diffusers.py loaded it
  # in UNet2DModel and DDPMPipeline and got the reference's outputs bit for bit)
  for written, read in ((out / "unet" / "config.json", entry["diffusers_reads_export"]),
                        (out / "scheduler" / "scheduler_config.json",
                         entry["diffusers_reads_export_scheduler"])):
    ours = json.loads(written.read_text())
    public = {k: v for k, v in read.items() if not k.startswith("_")}
    assert {k: ours.get(k) for k in public} == public
  state = load_file(str(out / "unet" / diffusers.WEIGHTS))
  assert {k: list(v.shape) for k, v in state.items()} == entry["shapes"]
  assert all(v.dtype == np.float32 for v in state.values())
  _, back = weights.load_diffusers(str(out))  # the pipeline folder reads back in
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
    assert np.array_equal(a, b)


def test_the_published_cifar10_folder_is_configs_cifar10_ddpm():
  """google/ddpm-cifar10-32's config.json gives configs/cifar10_ddpm.py's network (35.7M
  parameters), and diffusers' state dict of it fits the U-Net name for name."""
  published = DIFFUSERS["published_cifar10"]
  fields = diffusers.settings(published["config"], published["scheduler_config"])
  ours = load.load(str(ROOT / "configs" / "cifar10_ddpm.py"))
  for name in weights.WEIGHT_FIELDS:
    node, leaf = load.parent(ours, name)
    have = tuple(node[leaf]) if isinstance(node[leaf], tuple) else node[leaf]
    assert have == fields[name], name
  assert published["parameters"] == 35_746_307
  template, _ = weights.param_shapes(ours)
  fake = {k: np.broadcast_to(np.float32(0), s) for k, s in published["shapes"].items()}
  tree = tensors.tree_from_state_dict(fake, weights._unet_names(ours), template, "cifar10", "")
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree)) == 35_746_307


@pytest.mark.parametrize("file,field,value,match", [
    ("config.json", "flip_sin_to_cos", True, r"flip_sin_to_cos=True is not supported"),
    ("config.json", "attention_head_dim", 8, r"attention_head_dim=8 is not supported"),
    ("config.json", "num_class_embeds", 10, r"num_class_embeds=10 is not supported"),
    ("config.json", "up_block_types", ["UpBlock2D", "UpBlock2D"], r"up_block_types=.* need"),
    ("scheduler_config.json", "trained_betas", [0.1] * 1000, r"trained_betas=.*not supported"),
    ("scheduler_config.json", "prediction_type", "flow", r"prediction_type='flow'"),
])
def test_a_field_the_unet_cannot_honour_is_refused_by_name(tmp_path, file, field, value, match):
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  content = json.loads((folder / file).read_text())
  content[field] = value
  (folder / file).write_text(json.dumps(content))
  with pytest.raises(tensors.FormatError, match=match):
    weights.load_diffusers(str(folder))


def test_a_missing_or_misshapen_tensor_is_named(tmp_path):
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  state = load_file(str(folder / diffusers.WEIGHTS))
  conv = state.pop("down_blocks.0.resnets.0.conv1.weight")
  save_file(state, str(folder / diffusers.WEIGHTS))
  with pytest.raises(tensors.FormatError, match=r"^\S+: tensor down_blocks.0.resnets.0.conv1."
                                                r"weight is missing \(1 missing, 0 unexpected"):
    weights.load_diffusers(str(folder))
  state["down_blocks.0.resnets.0.conv1.weight"] = conv[:16]
  save_file(state, str(folder / diffusers.WEIGHTS))
  with pytest.raises(tensors.FormatError, match=r"tensor down_blocks.0.resnets.0.conv1.weight "
                                                r"has shape \(16, 32, 3, 3\)"):
    weights.load_diffusers(str(folder))


def test_import_refuses_a_config_that_does_not_match_the_folder(tmp_path):
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  config, _ = weights.load_diffusers(str(folder))
  config.model.ch_mult = (1, 2, 2)
  with pytest.raises(ValueError, match=r"model.ch_mult=\(1, 2\), the config has \(1, 2, 2\); "
                                       r"pass --config.model.ch_mult=\(1, 2\)"):
    weights.import_params(config, f"diffusers:{folder}", 3)


def test_pickles_are_never_loaded(tmp_path):
  folder = _diffusers_folder(tmp_path, "attention_at_4")
  (folder / diffusers.WEIGHTS).rename(folder / "diffusion_pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match=r"a \.bin file is a pickle, which is never loaded"):
    weights.load_diffusers(str(folder))
  pkl = tmp_path / "edm-cifar10-32x32-uncond-vp.pkl"
  pkl.write_bytes(b"\x80\x04cos\nsystem\n.")  # would run code if unpickled
  config = defaults.get_config()
  config.model.name, config.training.objective = "song_unet", "edm"
  with pytest.raises(tensors.FormatError, match=r"is a Python pickle, which can run code when "
                                                r"loaded, so it is not read\. export .*np\.savez"):
    weights.load_edm(str(pkl), config)
  fake = tmp_path / "notes.npz"
  np.savez(fake, a=np.array([{"x": 1}], dtype=object))
  with pytest.raises(tensors.FormatError, match="holds Python objects, refused for safety"):
    tensors.read(str(fake))


TORCH_SAVES = FIXTURES / "torch_saves"


def _flat(obj, path=()):
  """{"a/0/b": leaf} of nested dicts and lists (make_torch_saves.py's keys)."""
  if isinstance(obj, dict):
    return {k: v for key, value in obj.items() for k, v in _flat(value, (*path, str(key))).items()}
  if isinstance(obj, (list, tuple)):
    return {k: v for i, value in enumerate(obj) for k, v in _flat(value, (*path, str(i))).items()}
  return {"/".join(path): obj}


@pytest.mark.parametrize("name", ["dtypes", "views", "score_sde_checkpoint", "zero_dim",
                                  "adam_state", "legacy_ncsnv2_checkpoint"])
def test_torch_save_files_are_read_as_data_without_torch(name):
  """torch 2.14's torch.save of float32/16, bfloat16, int64 and bool tensors, transposed and
  offset views, shared storages, 0-d tensors and nested containers, in the zip format and the
  legacy one (torch < 1.6's, as ermongroup/ncsnv2's checkpoints are): every value as torch
  held it."""
  got = _flat(torch_files.read(str(TORCH_SAVES / f"{name}.pt")))
  with np.load(TORCH_SAVES / f"{name}.npz") as z:
    want = {k: z[k] for k in z.files if not k.endswith("@bits")}
  for key, value in want.items():
    assert np.shape(got[key]) == value.shape and np.array_equal(got[key], value), key


def _rezip(source, path, change):
  """A copy of the zip `source` with change(name, bytes) -> bytes or None (left out)."""
  with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
    for name in src.namelist():
      data = change(name, src.read(name))
      if data is not None:
        dst.writestr(name, data)


def test_a_torch_file_naming_anything_but_tensors_is_refused_before_it_runs(tmp_path):
  """A pickle that would call os.system is refused by name, and nothing runs; a storage cut
  short or missing is one line."""
  marker = tmp_path / "ran"
  evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
  _rezip(TORCH_SAVES / "zero_dim.pt", tmp_path / "evil.pt",
         lambda name, data: evil if name.endswith("data.pkl") else data)
  with pytest.raises(tensors.FormatError, match=r"names os.system, which is not a tensor or a "
                                                r"container, so it is not read"):
    torch_files.read(str(tmp_path / "evil.pt"))
  assert not marker.exists()
  for name, change, match in [
      ("cut.pt", lambda n, d: b"" if n.endswith("data/0") else d, "reads past"),
      ("lost.pt", lambda n, d: None if n.endswith("data/0") else d, r"lacks the storage data/0")]:
    _rezip(TORCH_SAVES / "zero_dim.pt", tmp_path / name, change)
    with pytest.raises(tensors.FormatError, match=match):
      torch_files.read(str(tmp_path / name))


DIFFUSERS_NCSNPP = json.loads((FIXTURES / "diffusers_ncsnpp.json").read_text())


@pytest.mark.parametrize("name", _first_quick(DIFFUSERS_NCSNPP["cases"]))
def test_a_diffusers_ncsnpp_folder_gives_its_outputs(tmp_path, name):
  """A ScoreSdeVePipeline folder (UNet2DModel with Fourier time and Skip blocks, as
  google/ncsnpp-* publish it) loads onto NCSN++ with the VE SDE of its scheduler; the published
  setting (center_input_sample: data in [0, 1]) is this library's network on y = 2x − 1 with
  σ_y = 2σ (the score halves), the σ range doubled."""
  entry = DIFFUSERS_NCSNPP["cases"][name]
  drawn = random_state_dict({("time_proj.freqs" if k == "time_proj.weight" else k): v
                             for k, v in entry["shapes"].items()}, entry["seed"])
  state = {("time_proj.weight" if k == "time_proj.freqs" else k): v for k, v in drawn.items()}
  folder = tmp_path / "ncsnpp"
  (folder / "unet").mkdir(parents=True)
  (folder / "scheduler").mkdir()
  (folder / "unet" / "config.json").write_text(json.dumps(entry["config"]))
  (folder / "scheduler" / "scheduler_config.json").write_text(
      json.dumps(entry["scheduler_config"]))
  save_file(state, str(folder / "unet" / diffusers.WEIGHTS))
  config, params = weights.load_diffusers(str(folder))
  a = _arrays("diffusers_ncsnpp", name)
  scale = 2.0 if entry["config"]["center_input_sample"] else 1.0
  assert config.sde.sigma_max == scale * entry["scheduler_config"]["sigma_max"]
  assert (config.model.name, config.sde.name, config.sde.num_scales) == ("ncsnpp", "ve", 2000)
  y = 2 * a["x"] - 1 if scale == 2 else a["x"]
  out = weights.network_fn(config)(params, y, np.log(scale * a["sigma"]))
  assert _rel_err(out, a["out"] / scale) <= 1e-5, _rel_err(out, a["out"] / scale)


def _crafted(path, pickled: bytes, storages=(), compress=zipfile.ZIP_STORED):
  """A torch-style zip whose data.pkl is `pickled` (protocol 2 opcodes) and storages."""
  with zipfile.ZipFile(path, "w", compress) as z:
    z.writestr("archive/data.pkl", b"\x80\x02" + pickled + b".")
    for key, raw in dict(storages).items():
      z.writestr(f"archive/data/{key}", raw)


def _op_int(n):
  return b"\x8a\x08" + n.to_bytes(8, "little", signed=True)  # LONG1


def _op_tuple(*items):
  return b"(" + b"".join(items) + b"t"


def _op_str(s):
  return b"X" + len(s.encode()).to_bytes(4, "little") + s.encode()


def _op_tensor(storage, offset, size, stride):
  return (b"ctorch._utils\n_rebuild_tensor_v2\n" + _op_tuple(
      storage, _op_int(offset), _op_tuple(*map(_op_int, size)),
      _op_tuple(*map(_op_int, stride)), b"\x89", b"}") + b"R")


STORAGE = _op_tuple(_op_str("storage"), b"ctorch\nFloatStorage\n", _op_str("0"),
                    _op_str("cpu"), _op_int(4)) + b"Q"


@pytest.mark.parametrize("name, pickled, storages, compress, match", [
    ("broadcast", _op_tensor(STORAGE, 0, (2**28,), (0,)), {"0": bytes(16)}, zipfile.ZIP_STORED,
     r"reads past \(or repeats beyond\) its storage of 4 elements"),
    ("overflow", _op_tensor(STORAGE, 0, (2**40, 2**40), (1, 1)), {"0": bytes(16)},
     zipfile.ZIP_STORED, r"reads past"),
    ("from_a_tensor", _op_tensor(_op_tensor(STORAGE, 0, (2, 2), (2, 1)), 3, (4,), (1,)),
     {"0": bytes(16)}, zipfile.ZIP_STORED, r"a tensor is rebuilt from ndarray, not a storage"),
    ("build_on_a_storage", b"ctorch\nFloatStorage\n}" + _op_str("dtype") + _op_str("<i4")
     + b"sb0}", {}, zipfile.ZIP_STORED, r"sets the state of a _Storage"),
    ("compressed", _op_tensor(STORAGE, 0, (4,), (1,)), {"0": bytes(16)}, zipfile.ZIP_DEFLATED,
     r"storage data/0 is compressed, which torch.save never does"),
])
def test_a_crafted_torch_file_is_refused_before_it_allocates_or_changes_anything(
    tmp_path, name, pickled, storages, compress, match):
  """What the allow-list alone would let through: a zero-stride or oversized view (memory), a
  tensor rebuilt from a tensor (a read past its buffer), BUILD on an allowed object (state
  that would change later reads), a deflated storage (a zip bomb); and a legacy file's
  container that contains itself."""
  _crafted(tmp_path / f"{name}.pt", pickled, storages, compress)
  with pytest.raises(tensors.FormatError, match=match):
    torch_files.read(str(tmp_path / f"{name}.pt"))
  assert torch_files.read(str(TORCH_SAVES / "dtypes.pt"))["f32"].dtype == np.float32
  legacy = tmp_path / "recursive.pt"
  legacy.write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (
      torch_files.LEGACY_MAGIC, 1001, {"little_endian": True})) + b"\x80\x02]q\x00h\x00a."
      + pickle.dumps([], protocol=2))
  with pytest.raises(tensors.FormatError, match=r"holds a container that contains itself"):
    torch_files.read(str(legacy))


# ------------------------------------------------------------------ score_sde

NCSNPP = json.loads((FIXTURES / "ncsnpp.json").read_text())
SCORE_SDE_PYTORCH = json.loads((FIXTURES / "score_sde_pytorch.json").read_text())
OURS = ("ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv", "fir",
        "fir_kernel", "skip_rescale", "resblock_type", "progressive", "progressive_input",
        "progressive_combine", "embedding_type", "fourier_scale", "init_scale",
        "scale_by_sigma", "nonlinearity")


def _score_sde_config(model: dict):
  """This library's config of a score_sde config.model (nf is model.ch)."""
  config = defaults.get_config()
  config.data.image_size = 8
  config.model.name, config.model.ch = "ncsnpp", model["nf"]
  for k in OURS:
    config.model[k] = tuple(model[k]) if isinstance(model[k], list) else model[k]
  ve = model["embedding_type"] == "fourier"
  config.training.objective, config.sde.name = "dsm", ("ve" if ve else "vp")
  return config


def _noise_input(entry, time_cond, scale=1.0):
  return np.log(scale * time_cond) if entry["model"]["embedding_type"] == "fourier" else time_cond


def _flax_checkpoint(path, params, junk):
  """A file as score_sde's checkpoints.save_checkpoint writes its State (models/utils.py):
  msgpack of {step, optimizer, lr, model_state, ema_rate, params_ema, rng}."""
  state = {"step": 26, "optimizer": {"target": junk, "state": {"step": 26}}, "lr": 2e-4,
           "model_state": {}, "ema_rate": 0.999, "params_ema": params,
           "rng": np.zeros(2, np.uint32)}
  path.write_bytes(serialization.msgpack_serialize(state))


@pytest.mark.parametrize("name", ["ncsnpp_ve_uncentered", "ddpmpp_vp"])
def test_a_score_sde_flax_checkpoint_gives_its_outputs(tmp_path, name):
  """The EMA weights load as they are; score_sde's uncentered VE model, fed (y + 1)/2 and
  σ/2 by the reference, is this library's network on y with σ: the output halves (the score
  of y = 2x − 1 is half that of x)."""
  entry = NCSNPP["cases"][name]
  params = traverse_util.unflatten_dict(random_state_dict(entry["shapes"], entry["seed"], "flax"),
                                        sep="/")
  junk = jax.tree.map(lambda a: a + 1, params)  # the raw weights: not what is read
  _flax_checkpoint(tmp_path / "checkpoint_26", params, junk)
  config = _score_sde_config(entry["model"])
  loaded = weights.load_score_sde(str(tmp_path / "checkpoint_26"), config)
  arrays = _arrays("ncsnpp", name)
  uncentered = not entry["centered"]
  out = weights.network_fn(config)(loaded, arrays["x"],
                                   _noise_input(entry, arrays["time_cond"], 2 if uncentered else 1))
  want = arrays["out"] / (2 if uncentered else 1)
  assert _rel_err(out, want) <= 1e-5, _rel_err(out, want)


@pytest.mark.parametrize("name", sorted(SCORE_SDE_PYTORCH["cases"]))
def test_a_score_sde_pytorch_checkpoint_gives_its_outputs(tmp_path, monkeypatch, name):
  """checkpoint.pth as score_sde_pytorch saves it ({model, ema, optimizer, step}; DataParallel
  names), read here as torch.load(weights_only=True) returns it: the EMA's shadow parameters
  in model.parameters() order are the weights."""
  entry = SCORE_SDE_PYTORCH["cases"][name]
  ema = random_state_dict(entry["shapes"], entry["seed"])
  model = {f"module.{k}": (ema[k] if k not in entry["trained"] else ema[k] + 1)
           for k in entry["names"]}  # raw weights differ from the EMA's; the fixed W does not
  model["module.sigmas"] = np.ones(1000, np.float32)
  checkpoint = {"model": model, "ema": {"decay": 0.999, "num_updates": 5,
                                        "shadow_params": [ema[k] for k in entry["trained"]]},
                "optimizer": {}, "step": 5}
  monkeypatch.setattr(torch_files, "read", lambda path: checkpoint)
  config = _score_sde_config(entry["model"])
  params = weights.load_score_sde(str(tmp_path / "checkpoint_5.pth"), config, centered=True)
  arrays = _arrays("score_sde_pytorch", name)
  out = weights.network_fn(config)(params, arrays["x"], _noise_input(entry, arrays["time_cond"]))
  assert _rel_err(out, arrays["out"]) <= 1e-5


def test_a_pth_file_that_is_not_torch_saves_is_one_line(tmp_path):
  (tmp_path / "checkpoint.pth").write_bytes(b"\x80\x02}q\x00.")  # a legacy (pre-1.6) pickle
  config = _score_sde_config(SCORE_SDE_PYTORCH["cases"]["ddpmpp_vp"]["model"])
  with pytest.raises(tensors.FormatError, match=r"is not a PyTorch file \(no zip, no legacy "
                                                r"magic number\)"):
    weights.load_score_sde(str(tmp_path / "checkpoint.pth"), config)


SCORE_SDE_DDPM = json.loads((FIXTURES / "score_sde_ddpm.json").read_text())
SCORE_SDE_DDPM_FLAX = json.loads((FIXTURES / "score_sde_ddpm_flax.json").read_text())


def _ddpm_config(model: dict):
  """This library's DDPM U-Net config of a score_sde DDPM config.model."""
  config = defaults.get_config()
  config.data.image_size = 8
  m = config.model
  m.name, m.ch, m.ch_mult = "ddpm", model["nf"], tuple(model["ch_mult"])
  m.num_res_blocks, m.attn_resolutions = model["num_res_blocks"], tuple(model["attn_resolutions"])
  config.training.objective, config.sde.name = "dsm", "vp"
  return config


@pytest.mark.parametrize("fmt", ["pytorch", "flax"])
@pytest.mark.parametrize("name", _first_quick(SCORE_SDE_DDPM["cases"]))
def test_a_score_sde_ddpm_checkpoint_gives_its_outputs(tmp_path, monkeypatch, name, fmt):
  """score_sde's DDPM (models/ddpm.py: one attention per attending decoder level) onto the
  DDPM U-Net: checkpoint.pth's EMA (all_modules.i names), or the Flax checkpoint's
  params_ema (Kind_n names, made by score_sde's Flax code from the same weights)."""
  entry = SCORE_SDE_DDPM["cases"][name]
  ema = random_state_dict(entry["shapes"], entry["seed"])
  if fmt == "pytorch":
    model = {f"module.{k}": ema[k] + 1 for k in entry["names"]}  # the raw weights: not read
    model["module.sigmas"] = np.ones(1000, np.float32)
    checkpoint = {"model": model, "ema": {"decay": 0.9999, "num_updates": 5,
                                          "shadow_params": [ema[k] for k in entry["trained"]]},
                  "optimizer": {}, "step": 5}
    monkeypatch.setattr(torch_files, "read", lambda path: checkpoint)
    path = tmp_path / "checkpoint_5.pth"
  else:  # the Flax layouts of the same tensors: conv HWIO, Dense [in, out], the rest as is
    flax = SCORE_SDE_DDPM_FLAX["cases"][name]
    layout = {4: "conv", 2: "linear"}
    tree = {tuple(p.split("/")): tensors.to_tree(
        ema[key], layout.get(ema[key].ndim, "vector") if p.endswith("/kernel") else "vector")
        for p, key in flax["torch_key"].items()}
    params = traverse_util.unflatten_dict(tree)
    path = tmp_path / "checkpoint_26"
    _flax_checkpoint(path, params, jax.tree.map(lambda a: a + 1, params))
  config = _ddpm_config(entry["model"])
  params = weights.load_score_sde(str(path), config)
  arrays = _arrays("score_sde_ddpm", name)
  out = weights.network_fn(config)(params, arrays["x"], arrays["labels"].astype(np.float32))
  assert _rel_err(out, arrays["out"]) <= 1e-5, _rel_err(out, arrays["out"])


# ------------------------------------------------------------------ EDM

EDM = json.loads((FIXTURES / "edm_networks.json").read_text())


def _edm_config(entry, cls: str | None = None):
  """The config of an EDM fixture's network (its SongUNet/DhariwalUNet keyword arguments)."""
  k = entry["kwargs"]
  config = defaults.get_config()
  config.training.objective, config.data.image_size = "edm", entry["resolution"]
  m = config.model
  m.name = {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}[cls or entry["cls"]]
  m.ch, m.ch_mult, m.num_res_blocks = k["model_channels"], tuple(k["channel_mult"]), k["num_blocks"]
  m.attn_resolutions, m.dropout = tuple(k["attn_resolutions"]), k["dropout"]
  for field in ("embedding_type", "channel_mult_noise", "encoder_type", "decoder_type",
                "augment_dim"):
    if k.get(field):
      m[field] = k[field]
  if k.get("label_dim"):
    m.conditional, config.data.num_classes = True, k["label_dim"]
  if "resample_filter" in k:
    m.resample_filter = tuple(k["resample_filter"])
  return config


@pytest.mark.parametrize("name", ["song_ncsnpp", "adm"])
def test_an_edm_state_dict_file_gives_its_outputs(tmp_path, name):
  """The state dict as EDM's export recipe writes it (np.savez of net.model.state_dict():
  the preconditioner's "model." prefix and the resample_filter buffers included)."""
  entry = EDM["cases"][name]
  state = random_state_dict(entry["shapes"], entry["seed"])
  state["enc.8x8_down.resample_filter"] = np.ones((1, 1, 2, 2), np.float32)  # a buffer
  np.savez(tmp_path / "net.npz", **{f"model.{k}": v for k, v in state.items()})
  config = _edm_config(entry)
  params = weights.load_edm(str(tmp_path / "net.npz"), config)
  arrays = _arrays("edm_networks", name)
  out = weights.network_fn(config)(params, arrays["x"], arrays["noise"])
  assert _rel_err(out, arrays["out"]) <= 1e-5
  weights.export(config, params, f"edm:{tmp_path / 'back.npz'}")  # EDM's names, + buffers
  with np.load(tmp_path / "back.npz") as z:
    weights_back = [k for k in z.files if not k.endswith("resample_filter")]
    assert set(weights_back) == set(entry["shapes"]) and all(
        np.array_equal(z[k], state[k]) for k in weights_back)


PRECOND = json.loads((FIXTURES / "edm_precond.json").read_text())


@pytest.mark.parametrize("name", _first_quick(PRECOND["cases"]))
def test_edm_vp_and_ve_baselines_are_this_librarys_vp_and_ve_models(tmp_path, name):
  """A VPPrecond/VEPrecond state dict onto SongUNet with training.objective=dsm on the VP/VE
  SDE: the Denoiser's x̂_0 at each σ (VP: at the state α x and the time t of σ) is EDM's
  D(x, σ); the export is the file that was read (VE: the noise-input shift and the sign
  undone)."""
  entry = PRECOND["cases"][name]
  state = random_state_dict(entry["shapes"], entry["seed"])
  np.savez(tmp_path / "net.npz", **{f"model.{k}": v for k, v in state.items()})
  config = _edm_config(entry, "SongUNet")
  config.training.objective = "dsm"
  config.sde.name = "vp" if entry["cls"] == "VPPrecond" else "ve"
  if entry["precond_kwargs"].get("label_dim"):
    config.model.conditional = True
    config.data.num_classes = entry["precond_kwargs"]["label_dim"]
  params = weights.load_edm(str(tmp_path / "net.npz"), config)
  a = _arrays("edm_precond", name)
  labels = jnp.asarray(a["labels"]) if config.model.conditional else None
  denoiser = build.denoiser(config)(functools.partial(
      build.apply_fn(build.model(config, 3)), params)).bind(labels)
  sigma = jnp.asarray(a["sigma"])
  if config.sde.name == "vp":  # EDM's σ(t) = √(exp(½ β_d t² + β_min t) − 1), β_d = 19.9
    t = (jnp.sqrt(0.1**2 + 2 * 19.9 * jnp.log1p(sigma**2)) - 0.1) / 19.9
    alpha = 1 / jnp.sqrt(1 + sigma**2)
    x0 = denoiser.predict(alpha[:, None, None, None] * a["x"], t).x0
  else:
    x0 = denoiser.predict_at_sigma(jnp.asarray(a["x"]), sigma).x0
  assert _rel_err(x0, a["D"]) <= 1e-5, _rel_err(x0, a["D"])
  weights.export(config, params, f"edm:{tmp_path / 'back.npz'}")
  with np.load(tmp_path / "back.npz") as z:
    back = {k: z[k] for k in z.files if not k.endswith("resample_filter")}
  assert set(back) == set(state)
  assert max(float(np.abs(back[k] - state[k]).max()) for k in state) <= 1e-6


@pytest.mark.parametrize("change, match", [
    ({"training.objective": "ddpm"}, r"trained with EDMPrecond \(training.objective=edm\), "
                                     r"VPPrecond or VEPrecond"),
    ({"sde.beta_max": 10.0}, r"VPPrecond networks have sde.beta_max=20.0, the config 10.0; "
                             r"set --config.sde.beta_max=20.0"),
    ({"model.mean_type": "x0"}, r"have model.mean_type='eps', the config 'x0'"),
])
def test_an_edm_state_dict_under_a_config_no_preconditioner_had_is_refused(change, match):
  config = _edm_config(PRECOND["cases"]["vp_ddpmpp"], "SongUNet")
  config.training.objective, config.sde.name = "dsm", "vp"
  for name, value in change.items():
    node, leaf = load.parent(config, name)
    node[leaf] = value
  with pytest.raises(ValueError, match=match):
    weights.load_edm("unread.npz", config)


ADM = json.loads((FIXTURES / "adm.json").read_text())


def _adm_config(kw: dict):
  """This library's config of a guided-diffusion UNetModel's flags."""
  config = defaults.get_config()
  config.data.image_size = kw["image_size"]
  m = config.model
  m.name, m.ch, m.ch_mult = "dhariwal_unet", kw["model_channels"], tuple(kw["channel_mult"])
  m.num_res_blocks, m.dropout = kw["num_res_blocks"], kw["dropout"]
  m.attn_resolutions = tuple(kw["image_size"] // ds for ds in kw["attention_resolutions"])
  m.num_heads = kw["num_heads"] if kw["num_head_channels"] == -1 else 0
  m.use_new_attention_order = kw["use_new_attention_order"]
  m.var_type = "learned_range" if kw["out_channels"] == 2 * kw["in_channels"] else "fixed_large"
  if kw["num_classes"]:
    m.conditional, config.data.num_classes = True, kw["num_classes"]
  return config


@pytest.mark.parametrize("name", _first_quick(ADM["cases"]))
def test_a_guided_diffusion_checkpoint_gives_its_outputs(tmp_path, monkeypatch, name):
  """OpenAI guided-diffusion's UNetModel state dict (legacy and new q/k/v order, heads by
  width or by count, learned σ, class labels) onto DhariwalUNet: its outputs for the integer
  timesteps and labels; as a .pt (its layout read by torch_files.read) and as .safetensors."""
  entry = ADM["cases"][name]
  state = random_state_dict(entry["shapes"], entry["seed"])
  config = _adm_config(entry["guided_kwargs"])
  monkeypatch.setattr(torch_files, "read", lambda path: state)
  params = weights.load_adm(str(tmp_path / "ema_0.9999_000000.pt"), config)
  a = _arrays("adm", name)
  out = weights.network_fn(config)(params, a["x"], a["timesteps"].astype(np.float32),
                                   a["y"] if "y" in a else None)
  assert _rel_err(out, a["out"]) <= 1e-5, _rel_err(out, a["out"])
  save_file(state, str(tmp_path / "model.safetensors"))
  again = weights.load_adm(str(tmp_path / "model.safetensors"), config)
  assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(params),
                                                  jax.tree.leaves(again)))
  config.model.use_new_attention_order = not config.model.use_new_attention_order
  wrong = weights.network_fn(config)(weights.load_adm(str(tmp_path / "model.safetensors"),
                                                      config), a["x"],
                                     a["timesteps"].astype(np.float32),
                                     a["y"] if "y" in a else None)
  assert _rel_err(wrong, a["out"]) > 0.01  # the q, k, v order matters


def test_the_attention_order_flag_is_read_by_an_adm_import_only(tmp_path, capsys, monkeypatch):
  common = ["--config=configs/demo.py", "--mode=import", f"--workdir={tmp_path / 'run'}",
            "--config.model.use_new_attention_order=True"]
  code, err = run_cli([*common, f"--import_from=diffusers:{tmp_path}"], capsys, monkeypatch)
  assert code == 2 and "use_new_attention_order is read only by --mode import --import_from=adm" in err, err
  code, err = run_cli([*common, f"--import_from=adm:{tmp_path / 'ema.pt'}"], capsys, monkeypatch)
  assert code == 2 and "guided-diffusion's UNetModel is model.name 'dhariwal_unet'" in err, err


def test_a_guided_diffusion_network_narrower_than_128_is_refused():
  config = _adm_config(ADM["cases"]["cond_legacy"]["guided_kwargs"])
  config.model.ch = 64
  with pytest.raises(tensors.FormatError, match=r"a level of 64 channels: guided-diffusion "
                                                r"normalizes with 32 groups at every width"):
    weights.load_adm("unread.pt", config)


NCSNV2 = json.loads((FIXTURES / "ncsnv2.json").read_text())


@pytest.mark.parametrize("name", _first_quick(NCSNV2["cases"]))
def test_an_ncsnv2_checkpoint_gives_its_outputs(tmp_path, monkeypatch, name):
  """ermongroup/ncsnv2's checkpoint list (its EMA shadow read, the raw model not) onto
  NCSNv2, NCSNv2Deeper, NCSNv2Deepest: the reference's F(x)/σ for x in [0, 1] is this
  library's ε̂ = −F on y = 2x − 1, and its score on y (σ doubled) is half the reference's."""
  entry = NCSNV2["cases"][name]
  shapes = {k: entry["shapes"][k] for k in entry["parameters_order"]}
  ema = random_state_dict(shapes, entry["seed"])
  model = {"module.sigmas": np.asarray(entry["sigmas"], np.float32),
           **{f"module.{k}": v + 1 for k, v in ema.items()}}
  checkpoint = [model, {"state": {}, "param_groups": []}, 3, 1000, ema]
  monkeypatch.setattr(torch_files, "read", lambda path: checkpoint)
  config = defaults.get_config()
  config.model.name = {"NCSNv2": "ncsnv2", "NCSNv2Deeper": "ncsnv2_deeper",
                       "NCSNv2Deepest": "ncsnv2_deepest"}[entry["cls"]]
  config.model.ch, config.data.image_size = entry["model"]["ngf"], 32
  config.training.objective = "ncsn"
  config.sde.sigma_max, config.sde.sigma_min, config.sde.num_scales = 2.0, 0.02, 10
  params = weights.load_ncsnv2(str(tmp_path / "checkpoint_1000.pth"), config)
  a = _arrays("ncsnv2", name)
  sigma = np.asarray(entry["sigmas"], np.float32)[a["y"]]
  y = 2 * a["x"] - 1
  eps = weights.network_fn(config)(params, y, np.zeros(2, np.float32))
  want = -a["out"] * sigma[:, None, None, None]
  assert _rel_err(eps, want) <= 1e-5, _rel_err(eps, want)
  denoiser = build.denoiser(config)(functools.partial(build.apply_fn(build.model(config, 3)),
                                                      params))
  score = denoiser.score_at_sigma(jnp.asarray(y), jnp.asarray(2 * sigma))
  assert _rel_err(score, a["out"] / 2) <= 1e-5


def test_malformed_checkpoints_of_the_new_formats_are_one_line(tmp_path):
  from ddpm_jax.interop import adm, diffusers_ncsnpp
  blocks = adm.blocks(8, (1,), 1, (8,))
  state = {k: np.ones(4) for k in ("time_embed.0.weight", "time_embed.2.weight", "out.0.weight",
                                   "out.2.weight", "input_blocks.0.0.weight",
                                   "input_blocks.1.1.norm.weight")}
  state["input_blocks.1.1.qkv.weight"] = np.ones(6)
  with pytest.raises(tensors.FormatError, match=r"a qkv weight of shape \(6,\) is not"):
    adm.edm_state_dict(state, 8, (1,), 1, (8,), lambda c: 1, False, "ema.pt")
  assert blocks[1] == ("input_blocks.1.0", "enc.8x8_block0", "input_blocks.1.1")
  with pytest.raises(tensors.FormatError, match=r"not a score_sde_pytorch checkpoint"):
    score_sde.ema_state_dict({"model": {}, "ema": {"decay": 0.9}})
  config = DIFFUSERS_NCSNPP["cases"]["centered"]["config"]
  narrow = {**config, "block_out_channels": [16, 32, 64, 64]}
  with pytest.raises(tensors.FormatError, match=r"a level of 64 channels normalizes with 32 "
                                                r"groups in diffusers"):
    diffusers_ncsnpp.settings(narrow, {})
  with pytest.raises(tensors.FormatError, match=r"sample_size=None and layers_per_block=1 must"):
    diffusers_ncsnpp.settings({**config, "sample_size": None}, {})


# ------------------------------------------------------------------ --mode import

# The learned-variance case's network on the embedded 8×8 one-channel digits.
FOLDER_NETWORK = ["--config.model.ch_mult=(1, 1, 2)", "--config.model.num_res_blocks=2",
                  "--config.model.attn_resolutions=(8,)", "--config.model.var_type=learned_range",
                  "--config.diffusion.beta_schedule=cosine"]


@pytest.mark.slow
def test_mode_import_writes_a_checkpoint_that_sample_runs_on(tmp_path, capsys, monkeypatch):
  folder = _diffusers_folder(tmp_path, "learned_range_three_levels")
  workdir = tmp_path / "run"
  common = ["--config=configs/demo.py", f"--workdir={workdir}", *FOLDER_NETWORK]
  code, err = run_cli([*common[:2], "--mode=import", f"--import_from=diffusers:{folder}"],
                      capsys, monkeypatch)  # the demo's network is not the folder's
  assert code == 2 and "holds a model with model.ch_mult=(1, 1, 2), the config has (1, 2); " \
      "pass --config.model.ch_mult=(1, 1, 2)" in err, err
  assert not workdir.exists()  # refused before the workdir was made
  code, err = run_cli([*common, "--mode=import", f"--import_from=diffusers:{folder}"], capsys,
                      monkeypatch)
  assert code == 0, err
  provenance = json.loads((workdir / "imported.json").read_text())
  assert provenance["source"] == f"diffusers:{folder}" and len(provenance["files"]) == 3
  code, err = run_cli([*common, "--mode=import", f"--import_from=diffusers:{folder}"], capsys,
                      monkeypatch)
  assert code == 2 and "already holds checkpoints (steps [0])" in err, err
  code, err = run_cli([*common, "--mode=sample", "--config.sampling.num_steps=2",
                       "--config.sampling.num_samples=8", "--config.sampling.batch_size=8"],
                      capsys, monkeypatch)
  assert code == 0, err
  assert len(list((workdir / "samples").glob("ddim2_eta0_ema_step0_*.png"))) == 1
  exported = tmp_path / "exported"
  code, err = run_cli([*common, "--mode=export", f"--export_to=diffusers:{exported}"], capsys,
                      monkeypatch)
  assert code == 0, err  # what was imported goes back out tensor for tensor
  theirs, ours = (load_file(str(f)) for f in (folder / diffusers.WEIGHTS,
                                             exported / "unet" / diffusers.WEIGHTS))
  assert theirs.keys() == ours.keys() and all(np.array_equal(theirs[k], ours[k]) for k in ours)
  code, err = run_cli([*common, "--mode=export", f"--export_to=diffusers:{exported}"], capsys,
                      monkeypatch)
  assert code == 2 and "exists; choose a new path (nothing is overwritten)" in err, err
  code, err = run_cli([*common, "--mode=import"], capsys, monkeypatch)
  assert code == 2 and "--mode import needs --import_from=FORMAT:PATH" in err


def _with_network(config, name: str):
  config.model.name = name
  return config


@pytest.mark.parametrize("call,match", [
    (lambda c: weights.parse_source("hub:google/ddpm-cifar10-32"),
     r"^--import_from='hub:google/ddpm-cifar10-32': use FORMAT:PATH with FORMAT one of"),
    (lambda c: weights.check_export(c, "score_sde:out"), r"^--export_to='score_sde:out': use"),
    (lambda c: weights.check_export(c, "edm:net.npz"),
     r"^--export_to=edm: writes EDM's networks .* not 'ddpm'; use diffusers"),
    (lambda c: weights.load_score_sde("checkpoint_1", _with_network(c, "half_unet")),
     r"^score_sde checkpoints are NCSN\+\+/DDPM\+\+ networks \(model.name 'ncsnpp'\) or its "
     r"DDPM model \(model.name 'ddpm'\), not 'half_unet'"),
    (lambda c: weights.load_edm("net.npz", c), r"^EDM's networks are model.name 'song_unet'"),
])
def test_a_wrong_format_or_network_for_the_weights_is_one_line(call, match):
  with pytest.raises(ValueError, match=match):
    call(defaults.get_config())  # the DDPM U-Net; nothing is read


def test_export_refuses_an_existing_path_and_a_network_diffusers_cannot_hold(tmp_path):
  config = defaults.get_config()
  with pytest.raises(ValueError, match=r"exists; choose a new path \(nothing is overwritten\)"):
    weights.check_export(config, f"diffusers:{tmp_path}")
  config.model.name = "song_unet"
  with pytest.raises(ValueError, match=r"^--export_to=diffusers: writes the unconditional DDPM"):
    weights.check_export(config, f"diffusers:{tmp_path / 'new'}")


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_an_export_that_cannot_be_written_leaves_nothing(tmp_path, where):
  """A target under a file, or in a read-only folder: one line naming it; no half-written
  folder (the pipeline is written beside the target and renamed to it whole)."""
  config, params = weights.load_diffusers(str(_diffusers_folder(tmp_path, "attention_at_4")))
  if where == "under_a_file":
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / "out"
  else:
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    target = tmp_path / "ro" / "out"
    if os.access(tmp_path / "ro", os.W_OK):
      pytest.skip("running as a user who may write anywhere (root)")
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  with pytest.raises(ValueError, match=rf"^--export_to: cannot write {target} \("):
    weights.save_diffusers(config, params, str(target))
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_an_export_writes_the_parameters_channels_and_refuses_a_config_they_do_not_fit(
    tmp_path):
  """A 1-channel U-Net exported by config alone writes in_channels 1 (it wrote 3 beside
  1-channel weights); a stated count or a config the parameters do not fit is refused."""
  config = defaults.get_config()
  config.data.image_size, config.model.ch, config.model.ch_mult = 8, 32, (1,)
  config.model.attn_resolutions = ()
  template, _ = weights.param_shapes(config, 1)
  params = jax.tree.map(lambda t: np.ones(t.shape, np.float32), template)
  out = weights.export(config, params, f"diffusers:{tmp_path / 'one'}")
  assert json.loads((tmp_path / "one" / "unet" / "config.json").read_text())["in_channels"] == 1
  with pytest.raises(ValueError, match="not those of the network this config builds .* with 3 "
                                       "image channels"):
    weights.export(config, params, f"diffusers:{tmp_path / 'three'}", channels=3)
  config.model.ch = 64
  with pytest.raises(ValueError, match="with 1, 2, 3 or 4 image channels; export with the "
                                       "config they were trained with"):
    weights.export(config, params, f"diffusers:{tmp_path / 'other'}")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["one"] and out.endswith("one")

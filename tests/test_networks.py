"""The record-setting networks equal their reference implementations: the same outputs for
the same weights (the published configurations' parameter counts: tests/test_configs.py).

Fixtures: tests/fixtures/make_edm_networks.py ran NVlabs/edm's training/networks.py (PyTorch,
commit 008a4e5) once, outside the project, with every state-dict entry drawn by
fixtures/reference_weights.py (nothing zero, the zero-initialized layers included); it saved
the inputs, the outputs and the state-dict names and shapes. Here the same weights are drawn
again, mapped onto the parameter tree by interop/edm_weights.py, and the outputs compared.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from flax import traverse_util

from ddpm_jax import configs
from ddpm_jax.config import build, weights
from ddpm_jax.interop import edm_weights as edm_interop
from ddpm_jax.models.dhariwal_unet import DhariwalUNet
from ddpm_jax.models.ncsnpp import NCSNpp
from ddpm_jax.models.song_unet import SongUNet

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from reference_weights import random_state_dict  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
EDM = json.loads((FIXTURES / "edm_networks.json").read_text())
CLASSES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


def _network(entry, channels=3):
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["kwargs"].items()}
  return CLASSES[entry["cls"]](out_channels=channels, **kwargs)


def _inputs(net, res, channels=3, batch=2):
  args = (jnp.zeros((batch, res, res, channels)), jnp.zeros((batch,)),
          jnp.zeros((batch,), jnp.int32) if net.label_dim else None)
  return args


def _shapes(net, res, channels=3):
  return jax.eval_shape(lambda: net.init(jax.random.key(0), *_inputs(net, res, channels)))["params"]


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(EDM["cases"]))
@pytest.mark.slow
def test_outputs_equal_the_reference_for_the_same_weights(name):
  entry = EDM["cases"][name]
  with np.load(FIXTURES / "edm_networks.npz") as z:
    arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}
  net = _network(entry)
  shapes = _shapes(net, entry["resolution"])
  assert _count(shapes) == entry["parameters"] + (
      entry["kwargs"]["model_channels"] * entry["kwargs"].get("channel_mult_noise", 1) // 2
      if entry["kwargs"].get("embedding_type") == "fourier" else 0)
  params = edm_interop.params_from_state_dict(random_state_dict(entry["shapes"], entry["seed"]),
                                              shapes)
  y = jnp.asarray(arrays["y"]) if net.label_dim else None
  out = net.apply({"params": params}, jnp.asarray(arrays["x"]), jnp.asarray(arrays["noise"]),
                  y, arrays.get("augment"))
  want = arrays["out"]
  err = float(np.abs(np.asarray(out) - want).max() / np.abs(want).max())
  assert err <= 1e-5, (name, err)
  # and the state dict comes back out under the reference's names
  back = edm_interop.state_dict(params)
  assert {k for k in back if not k.endswith("resample_filter")} == set(entry["shapes"])


def _config(entry):
  """The config whose network is this fixture's (config/build.py NETWORK_ROWS, read back)."""
  name = {"SongUNet": "song_unet", "DhariwalUNet": "dhariwal_unet"}[entry["cls"]]
  row, kwargs = build.NETWORK_ROWS[name], dict(entry["kwargs"])
  labels = kwargs.pop("label_dim", 0)
  fields = {f"model.{row.fields[k]}": tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  return configs.get("demo", **{
      "training.objective": "edm", "sampling.method": "edm", "model.name": name,
      "model.conditional": bool(labels), "data.num_classes": labels or 10,
      "data.image_size": entry["resolution"], **fields})


# Each case's whole state dict, buffers included, as EDM's load_state_dict(strict=True) wants
# it (tests/fixtures/make_edm_state_keys.py).
EDM_KEYS = json.loads((FIXTURES / "edm_state_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(EDM["cases"]))
def test_an_edm_export_is_the_whole_state_dict_edm_loads_strictly(name, tmp_path):
  """weights.export("edm:F.npz") writes every entry of the reference's state dict, the
  resample filters included, with its shape and values: what load_state_dict(strict=True)
  takes; a target without .npz is refused before anything is written."""
  entry, want = EDM["cases"][name], EDM_KEYS[name]
  config = _config(entry)
  template, _ = weights.param_shapes(config)
  params = edm_interop.params_from_state_dict(random_state_dict(entry["shapes"], entry["seed"]),
                                              template)
  path = weights.export(config, params, f"edm:{tmp_path}/net.npz")
  with np.load(path) as z:
    written = {k: z[k] for k in z.files}
  assert {k: list(v.shape) for k, v in written.items()} == {
      k: v["shape"] for k, v in want.items()}
  for key, v in want.items():
    if key.endswith("resample_filter"):
      np.testing.assert_array_equal(written[key], np.asarray(v["value"], np.float32))
  with pytest.raises(ValueError, match=r"name it .*net2.npz"):
    weights.export(config, params, f"edm:{tmp_path}/net2")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]


@pytest.mark.parametrize("name", ["song_skip_skip_cond_aug", "adm_cond_aug"])
@pytest.mark.slow
def test_the_public_network_function_takes_the_augmentation_labels(name):
  """weights.network_fn (the public forward of a config's network) equals the reference's
  forward with its class and augmentation labels; without the labels it differs."""
  entry = EDM["cases"][name]
  with np.load(FIXTURES / "edm_networks.npz") as z:
    arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}
  config = _config(entry)
  template, _ = weights.param_shapes(config)
  params = edm_interop.params_from_state_dict(random_state_dict(entry["shapes"], entry["seed"]),
                                              template)
  net = weights.network_fn(config)
  args = (params, jnp.asarray(arrays["x"]), jnp.asarray(arrays["noise"]), jnp.asarray(arrays["y"]))
  out, want = np.asarray(net(*args, augment=jnp.asarray(arrays["augment"]))), arrays["out"]
  assert float(np.abs(out - want).max() / np.abs(want).max()) <= 1e-5
  assert float(np.abs(np.asarray(net(*args)) - want).max() / np.abs(want).max()) > 1e-2
  with pytest.raises(ValueError, match="drop the argument augment"):
    weights.network_fn(configs.get("demo"))(params, *args[1:], augment=arrays["augment"])


def test_a_state_dict_of_another_configuration_is_refused_by_name():
  entry = EDM["cases"]["song_ddpmpp"]
  net = _network(EDM["cases"]["song_ncsnpp"])
  with pytest.raises(ValueError, match="missing.*map_noise.freqs.*check the network options"):
    edm_interop.params_from_state_dict(random_state_dict(entry["shapes"], 0),
                                       _shapes(net, entry["resolution"]))


# ------------------------------------------------------------------ score_sde's NCSN++ / DDPM++
# Fixtures: tests/fixtures/make_ncsnpp.py ran yang-song/score_sde's models/ncsnpp.py (Flax,
# commit 0acb9e0) once, outside the project. Its parameter tree is this library's, name for
# name, so the same weights are drawn straight into it.

NCSNPP = json.loads((FIXTURES / "ncsnpp.json").read_text())
NCSNPP_FIELDS = {  # score_sde's config.model field: NCSNpp's keyword
    "nf": "nf", "ch_mult": "ch_mult", "num_res_blocks": "num_res_blocks",
    "attn_resolutions": "attn_resolutions", "dropout": "dropout",
    "resamp_with_conv": "resamp_with_conv", "conditional": "noise_conditional", "fir": "fir",
    "fir_kernel": "fir_kernel", "skip_rescale": "skip_rescale",
    "resblock_type": "resblock_type", "progressive": "progressive",
    "progressive_input": "progressive_input", "progressive_combine": "progressive_combine",
    "embedding_type": "embedding_type", "fourier_scale": "fourier_scale",
    "init_scale": "init_scale", "scale_by_sigma": "scale_by_sigma",
    "nonlinearity": "nonlinearity"}


def _ncsnpp(model: dict) -> NCSNpp:
  return NCSNpp(**{ours: tuple(model[theirs]) if isinstance(model[theirs], list) else model[theirs]
                   for theirs, ours in NCSNPP_FIELDS.items()})


def _ncsnpp_tree(net, res):
  return jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, res, res, 3)),
                                         jnp.zeros((1,))))["params"]


@pytest.mark.parametrize("name", sorted(NCSNPP["cases"]))
@pytest.mark.slow
def test_ncsnpp_outputs_equal_score_sde_for_the_same_weights(name):
  entry = NCSNPP["cases"][name]
  with np.load(FIXTURES / "ncsnpp.npz") as z:
    arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(name + "/")}
  net = _ncsnpp(entry["model"])
  x = arrays["x"]
  tree = {k: list(v.shape) for k, v in
          traverse_util.flatten_dict(_ncsnpp_tree(net, x.shape[1]), sep="/").items()}
  assert tree == entry["shapes"]  # the reference's names and shapes, leaf for leaf
  params = traverse_util.unflatten_dict(random_state_dict(entry["shapes"], entry["seed"], "flax"),
                                        sep="/")
  t = arrays["time_cond"]  # score_sde feeds σ (Fourier) or t·999; this library log σ or t·999
  noise = np.log(t) if entry["model"]["embedding_type"] == "fourier" else t
  out = np.asarray(net.apply({"params": params}, jnp.asarray(x), jnp.asarray(noise)))
  err = float(np.abs(out - arrays["out"]).max() / np.abs(arrays["out"]).max())
  assert err <= 1e-5, (name, err)


# ------------------------------------------------------------------ gradient checkpointing

REMAT_CASES = {  # one level each: compiling is most of these tests' time
    "ddpm": lambda remat: __import__("ddpm_jax.models.unet", fromlist=["UNet"]).UNet(
        ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), dropout=0.1,
        remat=remat),
    "ncsnpp": lambda remat: NCSNpp(nf=16, ch_mult=(1,), num_res_blocks=1,
                                   attn_resolutions=(8,), progressive="output_skip",
                                   progressive_input="residual", remat=remat),
    "song_unet": lambda remat: SongUNet(out_channels=3, model_channels=16, channel_mult=(1,),
                                        num_blocks=1, attn_resolutions=(8,), label_dim=10,
                                        augment_dim=9, remat=remat),
    "dhariwal_unet": lambda remat: DhariwalUNet(out_channels=3, model_channels=64,
                                                channel_mult=(1,), num_blocks=1,
                                                attn_resolutions=(8,), remat=remat),
}


def _remat_inputs(name):
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  return x, jnp.array([0.3, -0.7]), (jnp.array([2, 10]) if name == "song_unet" else None)


def _remat_loss(net, x, t, y):
  return lambda p: jnp.sum(net.apply({"params": p}, x, t, y, train=True,
                                     rngs={"dropout": jax.random.key(5)})**2)


@pytest.mark.parametrize("name", sorted(REMAT_CASES))
def test_remat_recomputes_each_residual_block_and_keeps_the_tree(name):
  """Traced, not compiled: with model.remat the gradient's program holds one jax.checkpoint
  per residual block (five in these one-level networks: one down, two in the middle, two
  up) and none without it; the parameter tree is the same."""
  x, t, y = _remat_inputs(name)
  trees, counts = [], []
  for remat in (False, True):
    net = REMAT_CASES[name](remat)
    trees.append(jax.eval_shape(net.init, jax.random.key(0), x, t, y)["params"])
    program = jax.make_jaxpr(jax.grad(_remat_loss(net, x, t, y)))(trees[-1])
    counts.append(sum(e.primitive.name in ("remat2", "checkpoint") for e in program.jaxpr.eqns))
  assert jax.tree.structure(trees[0]) == jax.tree.structure(trees[1])
  assert counts == [0, 5], counts


@pytest.mark.slow
def test_remat_keeps_the_gradient():
  """The same gradient (dropout on, the same dropout keys) to float32 rounding, with a
  gradient for every parameter but the fixed Fourier frequencies (NCSN++: FIR resampling,
  progressive paths, attention)."""
  x, t, y = _remat_inputs("ncsnpp")
  plain, remat = REMAT_CASES["ncsnpp"](False), REMAT_CASES["ncsnpp"](True)

  @jax.jit
  def init(key):  # off the zero-initialized layers' zero gradients
    leaves, tree = jax.tree.flatten(plain.init(key, x, t, y)["params"])
    return jax.tree.unflatten(tree, [p + 0.05 * jax.random.normal(jax.random.key(i), p.shape)
                                     for i, p in enumerate(leaves)])
  params = init(jax.random.key(0))
  # compiled cheaply (this module's cheap_compile): 12 s for both, op by op 31 s
  g0, g1 = (jax.jit(jax.grad(_remat_loss(net, x, t, y)))(params) for net in (plain, remat))
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g0))
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)))
  assert all(float(jnp.abs(g).max()) > 0 for path, g in traverse_util.flatten_dict(g0).items()
             if not path[0].startswith("GaussianFourier")), "a parameter without gradient"
  assert diff <= 1e-5 * scale, (diff, scale)

"""Every config file builds, and the published configurations have the published networks:
their parameter counts equal the reference implementations' (tests/fixtures/*.json, made by
running score_sde and NVlabs/edm; the DDPM count is Ho et al.'s CIFAR-10 model)."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from ddpm_jax import configs
from ddpm_jax.config import build, sampler, schema

CONFIGS = configs.names()
_EDM = json.loads((ROOT / "tests" / "fixtures" / "edm_networks.json").read_text())["published"]
_SCORE_SDE = json.loads((ROOT / "tests" / "fixtures" / "ncsnpp.json").read_text())["published"]
PUBLISHED = {  # config: parameters of the reference's network (EDM: + its Fourier buffer)
    "cifar10_ddpm": 35_746_307,
    **{name: entry["parameters"] for name, entry in _SCORE_SDE.items()},
    # RectifiedFlow's CIFAR-10 model is score_sde's DDPM++ (its code imports score_sde's NCSN++)
    "cifar10_rectified_flow": _SCORE_SDE["cifar10_ddpmpp_vp"]["parameters"],
    **{mine: _EDM[theirs]["parameters"] + _EDM[theirs]["buffers"] for mine, theirs in (
        ("cifar10_edm_ddpmpp", "cifar10_uncond_ddpmpp"),
        ("cifar10_edm_ncsnpp", "cifar10_uncond_ncsnpp"),
        ("cifar10_edm_ddpmpp_cond", "cifar10_cond_ddpmpp"),
        ("cifar10_edm_ncsnpp_cond", "cifar10_cond_ncsnpp"),
        ("imagenet64_edm_adm", "imagenet64_cond_adm"))},
}


def _config(name):
  return configs.get(name)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_file_builds(name):
  config = _config(name)
  schema.check(config)
  sampler.loop(config, (config.data.image_size,) * 2 + (3,))  # the sampler's host objects
  build.loss(config)
  build.model(config, 3)
  leaves = _none_leaves(config)
  assert not leaves, f"{name}: None fields cannot be set from the command line: {leaves}"


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_have_the_published_parameter_counts(name):
  config = _config(name)
  size = config.data.image_size
  model = build.model(config, 3)
  y = jnp.zeros((1,), jnp.int32) if config.model.conditional else None
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                             jnp.zeros((1,)), y))["params"]
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == PUBLISHED[name]


def _none_leaves(config, prefix=""):
  out = []
  for k, v in config.items():
    if hasattr(v, "items"):
      out += _none_leaves(v, f"{prefix}{k}.")
    elif v is None:
      out.append(prefix + k)
  return out


def test_configs_load_by_name_with_overrides_and_refuse_unknown_names_and_fields():
  config = configs.get("demo", training={"batch_size": 8}, **{"sampling.num_steps": 3})
  assert (config.training.batch_size, config.sampling.num_steps) == (8, 3)
  assert configs.get(str(ROOT / "configs" / "demo.py")).data.image_size == 8  # a path
  assert set(configs.names()) == {p.stem for p in (ROOT / "configs").glob("*.py")} - {"__init__"}
  with pytest.raises(ValueError, match=r"Unknown config 'dmeo'; use one of \('celebahq256"):
    configs.get("dmeo")
  with pytest.raises(ValueError, match="unknown config field 'training.batch_sise'"):
    configs.get("demo", **{"training.batch_sise": 8})
  with pytest.raises(ValueError, match="training.batch_size='x' must be of type int, like its "
                                       "default 64"):
    configs.get("demo", training={"batch_size": "x"})


def test_a_config_file_importing_the_old_configs_folder_is_told_the_package(tmp_path,
                                                                            monkeypatch):
  """Outside the repository `from configs import X` fails (the folder is not installed): the
  error names the package the shipped configs are in."""
  monkeypatch.setitem(sys.modules, "configs", None)  # as on a machine without the checkout
  path = tmp_path / "mine.py"
  path.write_text("from configs import demo\n\ndef get_config():\n  return demo.get_config()\n")
  with pytest.raises(ValueError, match=r"mine.py: `from configs import ...` names the "
                                       r"repository folder; .* write `from ddpm_jax.configs "
                                       r"import ...`"):
    configs.get(str(path))

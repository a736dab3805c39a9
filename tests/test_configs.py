"""Every config file builds, and the published configurations have the published networks:
their parameter counts equal the reference implementations' (tests/fixtures/*.json, made by
running score_sde and NVlabs/edm; the DDPM count is Ho et al.'s CIFAR-10 model)."""

import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from ddpm_jax.config import build, sampler, schema

CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if p.stem != "__init__")
_EDM = json.loads((ROOT / "tests" / "fixtures" / "edm_networks.json").read_text())["published"]
_SCORE_SDE = json.loads((ROOT / "tests" / "fixtures" / "ncsnpp.json").read_text())["published"]
PUBLISHED = {  # config: parameters of the reference's network (EDM: + its Fourier buffer)
    "cifar10_ddpm": 35_746_307,
    **{name: entry["parameters"] for name, entry in _SCORE_SDE.items()},
    **{mine: _EDM[theirs]["parameters"] + _EDM[theirs]["buffers"] for mine, theirs in (
        ("cifar10_edm_ddpmpp", "cifar10_uncond_ddpmpp"),
        ("cifar10_edm_ncsnpp", "cifar10_uncond_ncsnpp"),
        ("cifar10_edm_ddpmpp_cond", "cifar10_cond_ddpmpp"),
        ("cifar10_edm_ncsnpp_cond", "cifar10_cond_ncsnpp"),
        ("imagenet64_edm_adm", "imagenet64_cond_adm"))},
}


def _config(name):
  return importlib.import_module(f"configs.{name}").get_config()


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

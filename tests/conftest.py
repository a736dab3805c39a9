"""Tests run on the CPU backend with 8 fake devices."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same small programs (the tiny U-Net's step and samplers): a
# compilation cache for this session (also inherited by the CLI subprocesses) compiles each
# once. It starts empty, so no test depends on an earlier run.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ddpm_jax_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Float64 for tests that compare against an exact reference."""
  with jax.enable_x64(True):
    yield

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
  """The demo config shrunk to seconds: a one-level U-Net on the 8×8 digits."""
  from ddpm_jax.configs import demo
  config = demo.get_config()
  config.model.ch_mult = (1,)
  config.training.batch_size = 16
  config.training.num_train_steps = 4
  config.training.log_every = 1
  config.training.checkpoint_every = 4  # one save, at the end (a save costs ~1 s on 8 devices)
  config.sampling.num_steps = 2
  config.sampling.num_samples = 8
  config.sampling.batch_size = 8
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  return config


def pytest_collection_modifyitems(items):
  """The longest tests first (the multi-process and fault-injection modules, then the other
  subprocess and training tests), so that the two xdist workers finish together."""
  first = ("test_multiprocess.py", "test_faults.py", "test_train.py", "test_launch.py")
  rank = {name: i for i, name in enumerate(first)}
  items.sort(key=lambda item: rank.get(item.path.name, len(first)))


@pytest.fixture
def cheap_compile():
  """XLA's cheapest compilation (jax_disable_most_optimizations) for the tests that compile
  programs to run them a few times: they compile ~30% sooner and run slower."""
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", False)


def run_cli(args, capsys, monkeypatch) -> tuple[int, str]:
  """The command line's entry point (main.parse_flags, then main.main) in this process."""
  from absl import flags

  from ddpm_jax import main as cli
  argv = ["ddpm_jax.main", *args]
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads the overrides from sys.argv
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # the override flags an earlier parse defined
  monkeypatch.delitem(sys.modules, "config_config", raising=False)  # ml_collections reuses it
  flags.FLAGS.unparse_flags()
  try:
    cli.main(cli.parse_flags(argv))
    code = 0
  except SystemExit as e:
    code = e.code
  finally:
    flags.FLAGS.unparse_flags()
  return code, capsys.readouterr().err

"""Tests run on the CPU backend with 8 fake devices."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402


@pytest.fixture
def x64():
  """Float64 for tests that compare against an exact reference."""
  with jax.enable_x64(True):
    yield

"""Schedules against the values printed in the DDPM / improved-DDPM / Lin et al. papers."""

import math

import numpy as np
import pytest

from ddpm_jax.core import schedules


def test_linear_matches_ddpm():
  betas = schedules.beta_schedule("linear", 1000)
  assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
  # ᾱ_T of the DDPM schedule ≈ 4.04e-5 (SNR at T, Lin et al. Table 1: √ᾱ_T = 0.0064).
  assert np.prod(1 - betas) == pytest.approx(4.0358e-5, rel=1e-4)


def test_quadratic_is_sqrt_linear():
  betas = schedules.beta_schedule("quadratic", 1000)
  np.testing.assert_allclose(np.sqrt(betas), np.linspace(0.01, math.sqrt(0.02), 1000), rtol=1e-12)
  assert np.prod(1 - betas) == pytest.approx(7.334e-4, rel=1e-3)


def test_cosine_follows_its_alpha_bar_definition():
  t_max, s = 1000, 0.008
  betas = schedules.beta_schedule("cosine", t_max)
  f = lambda t: math.cos((t / t_max + s) / (1 + s) * math.pi / 2)**2  # noqa: E731
  alpha_bar = np.cumprod(1 - betas)
  for t in (0, 10, 250, 500, 900, 990):
    assert alpha_bar[t] == pytest.approx(f(t + 1) / f(0), rel=1e-9)
  assert betas.max() == pytest.approx(0.999)  # the clip of improved DDPM
  assert alpha_bar[499] == pytest.approx(0.4938, abs=1e-4)


@pytest.mark.parametrize("name", schedules.BETA_SCHEDULES)
def test_every_schedule_is_monotone_and_valid(name):
  betas = schedules.beta_schedule(name, 200)
  assert betas.shape == (200,) and np.all((betas > 0) & (betas < 1))
  assert np.all(np.diff(betas) >= 0)
  s = schedules.make_schedule(betas)
  ab = np.asarray(s.alpha_bars)
  assert np.all(np.diff(ab) < 0) and 0 < ab[-1] < ab[0] < 1


def test_geometric_sigmas_are_a_geometric_sequence():
  sig = schedules.geometric_sigmas(50.0, 0.01, 232)
  assert sig[0] == pytest.approx(50.0) and sig[-1] == pytest.approx(0.01)
  ratios = sig[1:] / sig[:-1]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-10)


def test_zero_terminal_snr_rescale():
  betas = schedules.beta_schedule("linear", 1000)
  z = schedules.rescale_zero_terminal_snr(betas)
  ab, ab0 = np.cumprod(1 - z), np.cumprod(1 - betas)
  assert ab[-1] == pytest.approx(0.0, abs=1e-15) and ab[0] == pytest.approx(ab0[0])
  # √ᾱ is an affine map of the original √ᾱ.
  a, b = np.polyfit(np.sqrt(ab0), np.sqrt(ab), 1)
  np.testing.assert_allclose(a * np.sqrt(ab0) + b, np.sqrt(ab), atol=1e-12)
  s = schedules.make_schedule(z)  # β_T = 1 is accepted only as the last value
  assert float(s.alpha_bars[-1]) == 0.0


def test_schedule_terms_from_their_definitions(x64):
  betas = schedules.beta_schedule("linear", 100)
  s = schedules.make_schedule(betas, dtype=np.float64)
  ab = np.cumprod(1 - betas)
  ab_prev = np.concatenate([[1.0], ab[:-1]])
  np.testing.assert_allclose(s.alpha_bars, ab, rtol=1e-6)
  np.testing.assert_allclose(s.posterior_variance, betas * (1 - ab_prev) / (1 - ab), rtol=1e-6)
  assert float(s.posterior_variance[0]) == 0.0
  assert float(s.posterior_log_variance_clipped[0]) == pytest.approx(math.log(s.posterior_variance[1]))
  np.testing.assert_allclose(s.sqrt_one_minus_alpha_bars**2 + s.sqrt_alpha_bars**2, 1, rtol=1e-12)
  np.testing.assert_allclose(s.sqrt_alpha_bars**2, ab, rtol=1e-12)
  assert s.num_timesteps == 100


@pytest.mark.parametrize("betas,match", [
    ([0.1, 1.2], r"\(0, 1\)"),
    ([0.0, 0.1], r"\(0, 1\)"),
    ([0.1, 1.0, 0.2], r"\(0, 1\)"),
    ([0.1, float("nan")], r"\(0, 1\)"),
    ([[0.1, 0.2]], "1-D"),
    ([], ">= 1"),
])
def test_invalid_betas_are_rejected(betas, match):
  with pytest.raises(ValueError, match=match):
    schedules.make_schedule(betas)


def test_invalid_names_and_lengths():
  with pytest.raises(ValueError, match="linear"):
    schedules.beta_schedule("cosin", 10)
  with pytest.raises(ValueError, match=">= 1"):
    schedules.beta_schedule("linear", 0)
  with pytest.raises(ValueError, match="sigma_min < sigma_max"):
    schedules.geometric_sigmas(0.01, 50.0, 10)

"""EDM's augmentation equals the reference's AugmentPipe, and draws as it does.

Fixture: tests/fixtures/make_edm_augment.py ran NVlabs/edm's training/augment.py (PyTorch,
commit 008a4e5) once, outside the project, one example at a time, recording its random
draws as transformation parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from ddpm_jax.objectives import augment

FIXTURE = ROOT / "tests" / "fixtures" / "edm_augment.npz"
pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py


INTEGER = ("xflip", "yflip", "lumaflip")


def _draw(params) -> augment.Draw:
  return augment.Draw(*[jnp.asarray(v, jnp.int32 if name in INTEGER else jnp.float32)
                        for name, v in zip(augment.Draw._fields, params)])


@pytest.mark.parametrize("case,color", [("p0.6_16px", False), ("p1_8px", False),
                                        ("p0_16px", False), ("color_p0.7_8px", True),
                                        ("color_grey_p1_8px", True)])
@pytest.mark.slow
def test_images_and_labels_equal_the_reference_for_the_same_draws(case, color):
  with np.load(FIXTURE) as z:
    images, want, labels, params = (z[f"{case}/{k}"] for k in ("images", "out", "labels", "params"))
  got = np.stack([np.asarray(augment.apply(jnp.asarray(x), _draw(p), color))
                  for x, p in zip(images, params)])
  assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()
  got_labels = np.stack([np.asarray(augment.labels(_draw(p), color)) for p in params])
  np.testing.assert_allclose(got_labels, labels, atol=1e-6)
  assert labels.shape[1] == augment.LABEL_DIM + (augment.COLOR_LABEL_DIM if color else 0)


def test_draws_have_the_reference_probabilities():
  """x-flip 1/2 always; y-flip and luma flip p/2; scale, rotation, anisotropy, translation,
  brightness, contrast, hue and saturation each on with probability p; the anisotropy axis
  rotated half the time (each within 4.5 s.e.)."""
  n, p = 20_000, 0.3
  d = jax.vmap(lambda k: augment.draw(k, p, True))(jax.random.split(jax.random.key(0), n))
  freq = {"xflip": (np.mean(d.xflip), 0.5), "yflip": (np.mean(d.yflip), p / 2),
          "scale": (np.mean(d.scale != 0), p), "rotate": (np.mean(d.rotate != 0), p),
          "aniso": (np.mean(d.aniso != 0), p), "axis": (np.mean(d.aniso_angle != 0), 0.5),
          "translate": (np.mean(d.tx != 0), p), "brightness": (np.mean(d.brightness != 0), p),
          "contrast": (np.mean(d.contrast != 0), p), "lumaflip": (np.mean(d.lumaflip), p / 2),
          "hue": (np.mean(d.hue != 0), p), "saturation": (np.mean(d.saturation != 0), p)}
  for name, (got, want) in freq.items():
    assert abs(got - want) < 4.5 * np.sqrt(want * (1 - want) / n), (name, got, want)
  assert np.array_equal(d.tx != 0, d.ty != 0)  # one coin for both translations
  on = np.asarray(d.scale) != 0
  assert abs(np.std(np.asarray(d.scale)[on]) - 1) < 0.05  # w ~ N(0, 1) when on
  assert np.abs(np.asarray(d.rotate)).max() <= np.pi


def test_augment_draws_each_example_from_its_own_key():
  """The same key gives the same example whatever the batch around it (device counts)."""
  keys = jax.random.split(jax.random.key(3), 4)
  images = jax.random.normal(jax.random.key(4), (4, 8, 8, 3))
  out, labels = augment.augment(keys, images, 1.0)
  one, one_labels = augment.augment(keys[2:3], images[2:3], 1.0)
  np.testing.assert_array_equal(out[2:3], one)
  np.testing.assert_array_equal(labels[2:3], one_labels)
  assert labels.shape == (4, augment.LABEL_DIM) and np.all(np.abs(labels[:, 2:]).sum(1) > 0)

"""FID as the papers measured it: each tool's resize against the tool's own operation or an
independent interpolation, published reference statistics read and written in their format,
the FID from them against pytorch-fid's formula computed separately, the Inception Score
against its entropy form, and the presets' sample count, split, resize and seeds."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from conftest import tiny_config
from PIL import Image
from scipy import ndimage

from ddpm_jax.config import build, validate
from ddpm_jax.evaluation import fid, inception, protocols

WEIGHTS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "weights" / "inception_fid.npz"


def _image(seed=0, size=32):
  return np.random.default_rng(seed).uniform(0, 255, (size, size)).astype(np.float32)


def _interpolate(x, coords_y, coords_x):
  """scipy's linear interpolation at the given source coordinates (edges held)."""
  yy, xx = np.meshgrid(coords_y, coords_x, indexing="ij")
  return ndimage.map_coordinates(x.astype(np.float64), [yy, xx], order=1, mode="nearest")


def test_tf1_bilinear_samples_at_x_times_in_over_out():
  x = _image()
  ours = np.asarray(inception.resize(jnp.asarray(x)[None, :, :, None], "tf1_bilinear"))[0, :, :, 0]
  src = np.arange(299) * 32 / 299  # TF1 resize_bilinear: no half-pixel centres
  np.testing.assert_allclose(ours, _interpolate(x, src, src), atol=2e-3)


def test_bilinear_samples_at_half_pixel_centres():
  x = _image(1)
  ours = np.asarray(inception.resize(jnp.asarray(x)[None, :, :, None], "bilinear"))[0, :, :, 0]
  src = np.clip((np.arange(299) + 0.5) * 32 / 299 - 0.5, 0, None)  # F.interpolate, align_corners=False
  np.testing.assert_allclose(ours, _interpolate(x, src, src), atol=2e-3)


def test_clean_bicubic_is_pils_float_bicubic_clipped():
  x = _image(2)
  ours = np.asarray(inception.resize(jnp.asarray(x)[None, :, :, None], "clean_bicubic"))[0, :, :, 0]
  pil = np.asarray(Image.fromarray(x, mode="F").resize((299, 299), Image.BICUBIC)).clip(0, 255)
  np.testing.assert_allclose(ours, pil, atol=2e-3)
  assert pil.min() == 0 and pil.max() == 255  # the clip matters: bicubic overshoots


def _features(n, seed, shift=0.0, d=256):
  rng = np.random.default_rng(seed)
  basis = rng.standard_normal((32, d))
  return rng.standard_normal((n, 32)) @ basis + 0.3 * rng.standard_normal((n, d)) + shift


def _pytorch_fid(mu1, s1, mu2, s2):
  """pytorch-fid's calculate_frechet_distance: scipy's sqrtm of Σ₁Σ₂, its real part."""
  covmean = scipy.linalg.sqrtm(s1.dot(s2))
  diff = mu1 - mu2
  return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def test_fid_from_published_statistics_equals_pytorch_fids_formula(tmp_path):
  ref, samples = _features(1000, 0), _features(800, 1, shift=0.05)  # d = 256: sqrtm is O(d³)
  fid.save_statistics(str(tmp_path / "ref.npz"), *fid.statistics(ref))  # pytorch-fid's format
  with np.load(tmp_path / "ref.npz") as z:
    assert sorted(z.files) == ["mu", "sigma"] and z["sigma"].dtype == np.float64
  mu, sigma, feats = fid.load_reference(str(tmp_path / "ref.npz"))
  assert feats is None
  mu_s, sigma_s = fid.statistics(samples)
  ours = fid.frechet_distance(mu_s, sigma_s, mu, sigma)
  theirs = _pytorch_fid(mu_s, sigma_s, np.mean(ref, 0), np.cov(ref, rowvar=False))
  assert abs(ours - theirs) <= 1e-6 * theirs, (ours, theirs)
  np.savez(tmp_path / "cifar10_stats.npz", pool_3=ref.astype(np.float32))  # score_sde's
  mu3, sigma3, feats3 = fid.load_reference(str(tmp_path / "cifar10_stats.npz"))
  assert feats3.shape == (1000, 256)
  np.testing.assert_allclose(mu3, mu, rtol=1e-5, atol=1e-5)


def test_a_reference_file_of_another_kind_is_one_line(tmp_path):
  np.savez(tmp_path / "x.npz", features=np.zeros((4, 2048)))
  with pytest.raises(ValueError, match=r"holds \['features'\]: fid.reference_stats takes"):
    fid.load_reference(str(tmp_path / "x.npz"))
  np.savez(tmp_path / "odd.npz", mu=np.zeros(64), sigma=np.eye(32))
  with pytest.raises(ValueError, match=r"are not the statistics of one feature vector"):
    fid.load_reference(str(tmp_path / "odd.npz"))
  fid.save_statistics(str(tmp_path / "small.npz"), np.zeros(64), np.eye(64))
  config = tiny_config(**{"fid.reference_stats": str(tmp_path / "small.npz"),
                          "fid.inception_weights": str(WEIGHTS)})
  if WEIGHTS.exists():
    with pytest.raises(ValueError, match=r"holds 64-d statistics; the FID Inception's pool3"):
      validate.validate(config, "eval")


def test_inception_score_equals_its_entropy_form():
  """exp E KL(p(y|x) ‖ p(y)) = exp(H(p(y)) − E H(p(y|x))), per split, then mean ± std."""
  logits = np.random.default_rng(3).standard_normal((1000, 1008)) * 3
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  entropy = lambda q: -np.sum(q * np.log(q), -1)  # noqa: E731
  scores = [np.exp(entropy(part.mean(0)) - entropy(part).mean()) for part in np.split(p, 10)]
  mean, std = fid.inception_score(logits, 10)
  assert abs(mean - np.mean(scores)) <= 1e-9 * mean and abs(std - np.std(scores)) <= 1e-9
  peaked = np.eye(1008)[np.arange(1000) % 50] * 60  # confident and spread over 50 classes
  assert fid.inception_score(peaked, 10)[0] == pytest.approx(50, rel=1e-6)


@pytest.mark.parametrize("name", sorted(protocols.PROTOCOLS))
def test_each_preset_gives_its_count_split_resize_and_seeds(name, tmp_path):
  weights = tmp_path / "inception.npz"  # the gate checks that the file is there
  weights.write_bytes(b"")
  config = tiny_config(**{"fid.protocol": name, "fid.ref_split": "test", "fid.ref_num_examples": 7,
                          "fid.inception_weights": str(weights)})
  p = build.fid_protocol(config)
  assert (p.num_samples, p.ref_split) == (50_000, "train")
  assert p.resize == {"ddpm": "tf1_bilinear", "score_sde": "tf1_bilinear",
                      "clean_fid": "clean_bicubic"}.get(name, "bilinear")
  assert p.num_seeds == (3 if name == "edm" else 1)
  source, n = build.reference(config)  # all of "train": the fid.ref_* fields are not read
  assert n == len(source) == len(build.source(config, "train"))
  with pytest.raises(ValueError, match=r"--config.fid.ref_split is read only by fid.protocol ''"):
    validate.validate(config, "eval", ["fid.ref_split"])


@pytest.mark.skipif(not WEIGHTS.exists(), reason="../shared/weights (the FID Inception weights) "
                                                 "is absent")
@pytest.mark.slow
def test_eval_with_edms_protocol_reports_the_lowest_of_three_seeds(tmp_path):
  """An (untrained) tiny model under fid.protocol 'edm' with published statistics as the
  reference and weights that carry the classifier: three seeds, the lowest FID, each seed's
  (μ, Σ) written in the tools' format, the Inception Score of seed 1's logits."""
  from ddpm_jax.modes import evaluate
  from ddpm_jax.training import checkpoint
  with np.load(WEIGHTS) as z:
    arrays = {k: z[k] for k in z.files}
  rng = np.random.default_rng(0)
  arrays["logits.weight"] = (rng.standard_normal((1008, 2048)) * 0.05).astype(np.float32)
  arrays["logits.bias"] = np.zeros(1008, np.float32)
  weights = tmp_path / "inception_with_logits.npz"
  np.savez(weights, **arrays)
  ref = tmp_path / "ref.npz"
  fid.save_statistics(str(ref), np.zeros(2048), np.eye(2048))
  config = tiny_config(**{"fid.protocol": "edm", "fid.num_samples": 8, "fid.chunk_size": 8,
                          "fid.reference_stats": str(ref), "fid.inception_weights": str(weights),
                          "fid.kid_subset_size": 4, "fid.is_splits": 2})
  source = build.source(config)
  shape = build.image_shape(config, source)
  state = build.train_state(config, build.model(config, shape[-1]), shape)
  checkpoint.save(checkpoint.make_manager(str(tmp_path / "run" / "checkpoints")), state)
  result = evaluate.evaluate(config, str(tmp_path / "run"))
  assert result["seeds"] == [0, 1, 2] and result["fid"] == min(result["fid_per_seed"])
  assert len(set(result["fid_per_seed"])) == 3
  assert result["protocol"]["name"] == "edm" and not result["protocol"]["as_published"]
  assert result["protocol"]["resize"] == "bilinear" and "kid" not in result  # mu/sigma only
  stats = sorted((tmp_path / "run" / "eval").glob("*_stats.npz"))
  assert len(stats) == 3
  first = sorted((tmp_path / "run" / "eval").glob("*seed0_*/chunk_*.npz"))
  logits = np.concatenate([np.load(c)["logits"] for c in first])
  assert result["inception_score"] == pytest.approx(fid.inception_score(logits, 2)[0], rel=1e-12)
  assert result["num_samples"] == len(logits) == 8
  saved = json.loads(next((tmp_path / "run" / "eval").glob("*.json")).read_text())
  assert saved["fid_per_seed"] == result["fid_per_seed"]

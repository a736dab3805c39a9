"""The FID Inception network against the reference features, and FID/KID against closed forms."""

import pathlib

import jax
import numpy as np
import pytest
from scipy import linalg

from ddpm_jax.evaluation import fid, inception
from ddpm_jax.infra import files

WEIGHTS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "weights"


@pytest.mark.skipif(not (WEIGHTS / "inception_fid.npz").exists(),
                    reason="../shared/weights (the FID Inception weights) is absent")
def test_inception_reproduces_the_reference_features():
  ref = np.load(WEIGHTS / "inception_fid_reference.npz", allow_pickle=False)
  params = inception.load_params(str(WEIGHTS / "inception_fid.npz"))
  out = np.asarray(jax.jit(inception.InceptionV3().apply)(params, ref["images_uint8_nhwc"]))
  err = np.abs(out - ref["features"]).max()
  assert err < 1e-4 * np.abs(ref["features"]).max()  # measured 3.0e-6 (relative 6.6e-7)
  assert files.sha256(str(WEIGHTS / "inception_fid.npz")).startswith("1e4c8cc4")


def test_frechet_distance_equals_the_closed_form():
  rng = np.random.default_rng(0)
  d = 16
  a, b = rng.normal(size=(2, d, d))
  s1, s2 = a @ a.T / d, b @ b.T / d + 0.1 * np.eye(d)
  mu1, mu2 = rng.normal(size=(2, d))
  expected = np.sum((mu1 - mu2)**2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
  assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
  # Commuting (diagonal) covariances: Tr(Σ₁Σ₂)^½ = Σ √(σ₁σ₂).
  v1, v2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
  assert fid.frechet_distance(mu1, np.diag(v1), mu1, np.diag(v2)) == pytest.approx(
      np.sum((np.sqrt(v1) - np.sqrt(v2))**2), rel=1e-9)


def test_fid_of_samples_and_of_a_set_with_itself():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5000, 8))
  assert abs(fid.fid_from_features(x, x)) < 1e-6
  few = rng.normal(size=(100, 2048)) * rng.uniform(0.1, 3, 2048)  # N < d: Σ rank-deficient
  assert abs(fid.fid_from_features(few, few)) < 1e-6
  y = rng.normal(size=(20_000, 8)) * 1.5 + 0.5
  # N(0, I) vs N(0.5, 2.25 I): 8·0.25 + 8·(1 − 1.5)² = 4.
  assert fid.fid_from_features(rng.normal(size=(20_000, 8)), y) == pytest.approx(4.0, abs=0.15)


def test_kid_is_zero_for_identical_distributions_and_positive_otherwise():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(2, 2000, 16))
  mean, std = fid.kernel_inception_distance(x, y, num_subsets=20, subset_size=500)
  assert abs(mean) < 3 * std + 1e-3 and std > 0
  far, far_std = fid.kernel_inception_distance(x, y + 1.0, num_subsets=20, subset_size=500)
  assert far > 10 * far_std


def test_eval_mode_names_missing_weights(tmp_path):
  from conftest import tiny_config

  from ddpm_jax.modes import evaluate
  with pytest.raises(FileNotFoundError, match="fid.inception_weights"):
    evaluate.evaluate(tiny_config(**{"fid.inception_weights": str(tmp_path / "none.npz")}),
                      str(tmp_path))


# torchvision's Inception-v3 (what pytorch-fid's .pth names): kernel (kh, kw) of each
# BasicConv2d, written from its definition, independently of the converter's table.
_TV_KERNELS = {
    "Conv2d_1a_3x3": (3, 3), "Conv2d_2a_3x3": (3, 3), "Conv2d_2b_3x3": (3, 3),
    "Conv2d_3b_1x1": (1, 1), "Conv2d_4a_3x3": (3, 3),
    **{f"Mixed_5{c}.{b}": k for c in "bcd" for b, k in [
        ("branch1x1", (1, 1)), ("branch5x5_1", (1, 1)), ("branch5x5_2", (5, 5)),
        ("branch3x3dbl_1", (1, 1)), ("branch3x3dbl_2", (3, 3)), ("branch3x3dbl_3", (3, 3)),
        ("branch_pool", (1, 1))]},
    "Mixed_6a.branch3x3": (3, 3), "Mixed_6a.branch3x3dbl_1": (1, 1),
    "Mixed_6a.branch3x3dbl_2": (3, 3), "Mixed_6a.branch3x3dbl_3": (3, 3),
    **{f"Mixed_6{c}.{b}": k for c in "bcde" for b, k in [
        ("branch1x1", (1, 1)), ("branch7x7_1", (1, 1)), ("branch7x7_2", (1, 7)),
        ("branch7x7_3", (7, 1)), ("branch7x7dbl_1", (1, 1)), ("branch7x7dbl_2", (7, 1)),
        ("branch7x7dbl_3", (1, 7)), ("branch7x7dbl_4", (7, 1)), ("branch7x7dbl_5", (1, 7)),
        ("branch_pool", (1, 1))]},
    "Mixed_7a.branch3x3_1": (1, 1), "Mixed_7a.branch3x3_2": (3, 3),
    "Mixed_7a.branch7x7x3_1": (1, 1), "Mixed_7a.branch7x7x3_2": (1, 7),
    "Mixed_7a.branch7x7x3_3": (7, 1), "Mixed_7a.branch7x7x3_4": (3, 3),
    **{f"Mixed_7{c}.{b}": k for c in "bc" for b, k in [
        ("branch1x1", (1, 1)), ("branch3x3_1", (1, 1)), ("branch3x3_2a", (1, 3)),
        ("branch3x3_2b", (3, 1)), ("branch3x3dbl_1", (1, 1)), ("branch3x3dbl_2", (3, 3)),
        ("branch3x3dbl_3a", (1, 3)), ("branch3x3dbl_3b", (3, 1)), ("branch_pool", (1, 1))]},
}


@pytest.mark.skipif(not (WEIGHTS / "inception_fid.npz").exists(),
                    reason="../shared/weights/inception_fid.npz is absent (see docs/command_line.md)")
def test_pytorch_fid_converter_maps_every_layer_and_folds_the_bn_scale():
  from ddpm_jax.evaluation import convert_inception
  names = convert_inception.conv_names()
  assert set(names) == set(_TV_KERNELS)  # all 94 torchvision convolutions, nothing else
  with np.load(WEIGHTS / "inception_fid.npz", allow_pickle=False) as z:
    ours = {k: z[k] for k in z.files}
  assert {f"{o}.{leaf}" for o in names.values() for leaf in ("weight", "beta", "mean", "var")
          } == set(ours)  # the shared file was converted without the classifier
  for theirs, o in names.items():  # each pairing has torchvision's kernel shape
    assert ours[f"{o}.weight"].shape[2:] == _TV_KERNELS[theirs], (theirs, o)
  # A pytorch-fid-style state dict with a BatchNorm scale γ of either sign: the converter
  # must fold it back to the graph's (unscaled) parameters.
  rng = np.random.default_rng(0)
  state = {"fc.weight": np.zeros((1008, 2048), np.float32), "fc.bias": np.zeros(1008, np.float32)}
  for theirs, o in names.items():
    gamma = rng.choice([-1, 1], len(ours[f"{o}.beta"])) * rng.uniform(0.5, 2, len(ours[f"{o}.beta"]))
    state[f"{theirs}.conv.weight"] = ours[f"{o}.weight"] / gamma[:, None, None, None]
    state[f"{theirs}.bn.weight"] = gamma
    state[f"{theirs}.bn.bias"] = ours[f"{o}.beta"]
    state[f"{theirs}.bn.running_mean"] = ours[f"{o}.mean"] / gamma
    state[f"{theirs}.bn.running_var"] = ours[f"{o}.var"]
    state[f"{theirs}.bn.num_batches_tracked"] = np.array(0)
  converted = convert_inception.convert_state_dict(state)
  assert converted.pop("logits.weight").shape == (1008, 2048)  # kept for the Inception Score
  assert converted.pop("logits.bias").shape == (1008,)
  for k, v in ours.items():
    np.testing.assert_allclose(converted[k], v, rtol=1e-6, atol=1e-9, err_msg=k)
  del state["Mixed_7c.branch_pool.bn.running_var"]
  with pytest.raises(ValueError, match="pt_inception-2015-12-05"):
    convert_inception.convert_state_dict(state)


def test_nfe_per_sample_counts_each_samplers_network_calls():
  from conftest import tiny_config

  from ddpm_jax.config import build, sampler
  assert sampler.nfe_per_sample(tiny_config(**{"sampling.method": "ddpm"})) == \
      tiny_config().diffusion.num_timesteps
  pc = tiny_config(**{"sampling.method": "pc", "training.objective": "dsm",
                      "sampling.n_steps_each": 2})
  assert sampler.nfe_per_sample(pc) == build.process(pc).N * 3  # predictor + 2 corrector
  cfg = tiny_config(**{"sampling.method": "ddim", "sampling.num_steps": 7,
                       "model.conditional": True, "sampling.guidance_weight": 1.5})
  assert sampler.nfe_per_sample(cfg) == 14  # guided and unguided pass per step
  fast = {"sampling.num_steps": 10, "training.objective": "dsm"}
  # the SDE solvers' final denoising evaluation: one more (sampling.denoise, on by default)
  for method, extra, nfe in [("dpm_solver", {}, 11), ("unipc", {}, 11), ("edm", {}, 21),
                             ("dpm_solver", {"sampling.solver_order": 3}, 11),
                             ("dpm_solver", {"sampling.solver_order": 3,
                                             "sampling.dpm_solver_start": "singlestep"}, 12),
                             ("dpm_solver", {"sampling.dpm_solver_variant": "singlestep"}, 21),
                             ("edm", {"sampling.denoise": False}, 20),
                             ("unipc", {"sampling.denoise": False}, 10)]:
    assert sampler.nfe_per_sample(
        tiny_config(**fast, **extra, **{"sampling.method": method})) == nfe, (method, extra)


def test_precision_recall_match_a_brute_force_count():
  from scipy.spatial.distance import cdist
  rng = np.random.default_rng(0)
  real = rng.normal(size=(300, 5))
  fake = rng.normal(0.7, 1.3, size=(200, 5))
  k = 3
  rr, ff, fr = cdist(real, real), cdist(fake, fake), cdist(fake, real)
  rad_r = np.sort(rr, axis=1)[:, k]  # the k-th neighbour other than the point itself
  rad_f = np.sort(ff, axis=1)[:, k]
  want_p = np.mean([(fr[j] <= rad_r).any() for j in range(len(fake))])
  want_r = np.mean([(fr[:, i] <= rad_f).any() for i in range(len(real))])
  got = fid.precision_recall(real, fake, k=k, chunk=64)
  assert got == pytest.approx((want_p, want_r), abs=1e-12)
  assert 0.3 < want_p < 1 and 0.3 < want_r < 1  # a case where both are informative
  # Limits: identical sets cover each other; half the fakes far away halve the precision.
  assert fid.precision_recall(real, real, k=k) == (1.0, 1.0)
  half = np.concatenate([real[:150], real[:150] + 100.0])
  p, r = fid.precision_recall(real, half, k=k)
  assert p == 0.5 and r < 1.0

"""The DDPM U-Net: the published parameter counts, conditioning, dtypes, bad sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddpm_jax.models import layers
from ddpm_jax.models.unet import UNet

pytestmark = pytest.mark.usefixtures("cheap_compile")  # conftest.py: compiled sooner, run slower


def _count(model, size, channels=3, y=None):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)),
                                             jnp.zeros((1,)), y))
  return sum(x.size for x in jax.tree.leaves(shapes))


def test_cifar10_unet_has_the_published_35_7m_parameters():
  cifar = UNet(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1)
  assert _count(cifar, 32) == 35_746_307  # DDPM, Table 1 / appendix B: 35.7M


def test_256_unet_and_options_change_the_count_as_designed():
  big = UNet(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,))
  assert _count(big, 256) == 113_673_219  # the paper's 114M for CelebA-HQ / LSUN
  small = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
  base = _count(UNet(**small), 8)
  # 2C output channels for a learned variance: the last 3×3 conv gains 32·9·3 + 3 weights.
  assert _count(UNet(out_ch=6, **small), 8) - base == 32 * 9 * 3 + 3
  # 10 classes + the null label, embedded at 4·ch.
  assert _count(UNet(num_classes=10, **small), 8, y=jnp.zeros((1,), jnp.int32)) - base == 11 * 128


def test_forward_shapes_dtypes_and_zero_init_output():
  model = UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  params = model.init(jax.random.key(1), x, jnp.array([0, 999]))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = model.apply(params, x, jnp.array([0, 999]))
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert float(jnp.abs(out).max()) < 1e-3  # conv_out starts at scale 1e-10, as in DDPM
  # The output depends on t once conv_out is not zero.
  params = jax.tree.map(lambda p: p + 0.01, params)
  a, b = model.apply(params, x, jnp.array([0, 0])), model.apply(params, x, jnp.array([500, 500]))
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_dropout_only_in_training():
  model = UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  params = jax.tree.map(lambda p: p + 0.05, model.init(jax.random.key(1), x, jnp.zeros(2)))
  ev1, ev2 = model.apply(params, x, jnp.zeros(2)), model.apply(params, x, jnp.zeros(2))
  np.testing.assert_array_equal(ev1, ev2)
  tr = model.apply(params, x, jnp.zeros(2), train=True, rngs={"dropout": jax.random.key(2)})
  assert float(jnp.abs(tr - ev1).max()) > 1e-4


def test_timestep_embedding_is_the_ddpm_formula():
  emb = layers.timestep_embedding(jnp.array([0.0, 3.0]), 8)
  freqs = np.exp(-np.log(10_000) * np.arange(4) / 3)
  np.testing.assert_allclose(emb[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-6)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_fourier_embedding_and_bad_options():
  model = UNet(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), embedding="fourier")
  x = jnp.zeros((2, 4, 4, 1))
  out = model.apply(model.init(jax.random.key(0), x, jnp.log(jnp.array([0.01, 50.0]))), x,
                    jnp.log(jnp.array([0.01, 50.0])))
  assert out.shape == x.shape
  with pytest.raises(ValueError, match="divisible by 4"):
    UNet(ch=32, ch_mult=(1, 2, 2)).init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros(1))
  with pytest.raises(ValueError, match="positional"):
    UNet(ch=32, ch_mult=(1,), embedding="learned").init(jax.random.key(0), x, jnp.zeros(2))
  with pytest.raises(ValueError, match="pass labels y"):
    UNet(ch=32, ch_mult=(1,), num_classes=10).init(jax.random.key(0), x, jnp.zeros(2))


@pytest.mark.parametrize("attention", ["einsum", "xla"])
def test_attention_block_is_softmax_attention_over_positions(attention):
  """Both CPU implementations against the formula written in numpy (float64)."""
  b, h, w, c = 2, 4, 4, 32
  x = jax.random.normal(jax.random.key(0), (b, h, w, c))
  block = layers.AttnBlock(attention=attention)
  params = block.init(jax.random.key(1), x)["params"]
  # proj_out starts at ~0 (zero init): give it weights so the branch shows in the output.
  params["proj_out"]["kernel"] = jax.random.normal(jax.random.key(2), (c, c)) / np.sqrt(c)
  out = np.asarray(block.apply({"params": params}, x), np.float64)

  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  xn = np.asarray(x, np.float64)
  g = xn.reshape(b, h * w, 32, c // 32)  # GroupNorm, 32 groups
  mean, var = g.mean(axis=(1, 3), keepdims=True), g.var(axis=(1, 3), keepdims=True)
  y = ((g - mean) / np.sqrt(var + 1e-6)).reshape(b, h * w, c) * p["GroupNorm_0"]["scale"] + p["GroupNorm_0"]["bias"]
  q, k, v = (y @ p[n]["kernel"] + p[n]["bias"] for n in ("q", "k", "v"))
  logits = q @ k.transpose(0, 2, 1) / np.sqrt(c)
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  expected = xn + ((a @ v) @ p["proj_out"]["kernel"] + p["proj_out"]["bias"]).reshape(b, h, w, c)
  np.testing.assert_allclose(out, expected, atol=2e-5)
  with pytest.raises(ValueError, match="model.attention"):
    layers.AttnBlock(attention="flash").init(jax.random.key(1), x)

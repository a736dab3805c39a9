"""EDM's SongUNet (Karras et al. 2022, NVlabs/edm training/networks.py): score_sde's DDPM++ and
NCSN++ as EDM re-implemented them, with class labels and augmentation labels.

DDPM++: embedding_type "positional", channel_mult_noise 1, encoder "standard", decoder
"standard", resample_filter (1, 1). NCSN++: "fourier", 2, "residual", "standard", (1, 3, 3, 1).
Parameter names follow the reference's state dict (models/edm_layers.py).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from ddpm_jax.models.edm_layers import (
  Conv2d,
  FourierEmbedding,
  GroupNorm,
  Linear,
  UNetBlock,
  positional_embedding,
)
from ddpm_jax.models.remat import call

EMBEDDINGS = ("positional", "fourier")
ENCODERS = ("standard", "skip", "residual")
DECODERS = ("standard", "skip")


def one_hot_labels(y, label_dim: int, batch: int):
  """[B] integer labels in [0, label_dim] → [B, label_dim] one-hot; label_dim (the null label
  of classifier-free guidance) → the zero vector, as EDM's label dropout feeds it."""
  if y is None:
    raise ValueError("This network is class-conditional: pass labels y (label_dim for none).")
  return jax.nn.one_hot(jnp.broadcast_to(y, (batch,)), label_dim)


class SongUNet(nn.Module):
  """Keyword arguments as the reference's (model_channels ↔ ch elsewhere in this library).
  __call__(x [B, H, W, C], noise_labels [B], y [B] labels or None, augment [B, augment_dim]
  or None (zeros), train)."""
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 128
  channel_mult: Sequence[int] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.10
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: Sequence[int] = (1, 1)
  dtype: Any = jnp.float32
  remat: bool = False

  def _check(self):
    for name, value, choices in (("embedding_type", self.embedding_type, EMBEDDINGS),
                                 ("encoder_type", self.encoder_type, ENCODERS),
                                 ("decoder_type", self.decoder_type, DECODERS)):
      if value not in choices:
        raise ValueError(f"Unknown SongUNet {name} {value!r}; use one of {choices}.")

  def _inits(self):
    """The reference's initializers: (init, init_zero, the residual blocks' keywords)."""
    init = dict(init_mode="xavier_uniform", dtype=self.dtype)
    init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
    block = dict(num_heads=1, dropout=self.dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                 resample_filter=tuple(self.resample_filter), resample_proj=True,
                 adaptive_scale=False, init_args=dict(init_mode="xavier_uniform"),
                 init_zero=init_zero,
                 init_attn=dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2)),
                 dtype=self.dtype)
    return init, init_zero, block

  @nn.compact
  def __call__(self, x, noise_labels, y=None, augment=None, train: bool = False):
    self._check()
    emb = self._embedding(noise_labels, y, augment, x.shape[0])

    def run(block, h):  # one residual block, rematerialized with self.remat
      return call(block, h, emb, remat=self.remat, train=train)

    x, skips = self._encoder(x, run)
    return self._decoder(x, skips, run).astype(jnp.float32)

  def _embedding(self, noise_labels, y, augment, b):
    """The noise embedding with its halves swapped (sin first), plus labels and
    augmentation, through two SiLU layers."""
    init, _, _ = self._inits()
    noise_channels = self.model_channels * self.channel_mult_noise
    if self.embedding_type == "positional":
      emb = positional_embedding(noise_labels, noise_channels, endpoint=True)
    else:
      emb = FourierEmbedding(noise_channels, name="map_noise")(noise_labels)
    emb = emb.reshape(b, 2, -1)[:, ::-1].reshape(b, -1)
    if self.label_dim:
      labels = one_hot_labels(y, self.label_dim, b) * math.sqrt(self.label_dim)
      emb = emb + Linear(features=noise_channels, **init, name="map_label")(labels)
    if self.augment_dim:
      augment = jnp.zeros((b, self.augment_dim)) if augment is None else augment
      emb = emb + Linear(features=noise_channels, use_bias=False, **init,
                         name="map_augment")(augment)
    width = self.model_channels * self.channel_mult_emb
    emb = nn.silu(Linear(features=width, **init, name="map_layer0")(emb))
    return nn.silu(Linear(features=width, **init, name="map_layer1")(emb))

  def _encoder(self, x, run):
    """(x, skips): the encoder's output and every block's, with the skip or residual
    input pyramid (encoder_type) folded in."""
    init, _, block = self._inits()
    mc, rf, resolution = self.model_channels, tuple(self.resample_filter), x.shape[1]
    skips, aux = [], x
    for level, mult in enumerate(self.channel_mult):
      res = resolution >> level
      at = f"enc.{res}x{res}"
      if level == 0:
        x = Conv2d(features=mc, kernel=3, **init, name=f"{at}_conv")(x)
        skips.append(x)
      else:
        cout = x.shape[-1]
        x = run(UNetBlock(cout, down=True, **block, name=f"{at}_down"), x)
        skips.append(x)
        if self.encoder_type == "skip":
          aux = Conv2d(kernel=0, down=True, resample_filter=rf, name=f"{at}_aux_down")(aux)
          x = skips[-1] = x + Conv2d(features=cout, kernel=1, **init, name=f"{at}_aux_skip")(aux)
        if self.encoder_type == "residual":
          x = skips[-1] = aux = (x + Conv2d(
              features=cout, kernel=3, down=True, resample_filter=rf, fused_resample=True,
              **init, name=f"{at}_aux_residual")(aux)) / math.sqrt(2)
      for idx in range(self.num_blocks):
        x = run(UNetBlock(mc * mult, attention=res in self.attn_resolutions, **block,
                          name=f"{at}_block{idx}"), x)
        skips.append(x)
    return x, skips

  def _decoder(self, x, skips, run):
    """The decoder, summing its output layers over the levels for decoder_type "skip"."""
    _, init_zero, block = self._inits()
    rf, last = tuple(self.resample_filter), len(self.channel_mult) - 1
    resolution = x.shape[1] << last
    aux = None
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = resolution >> level
      at = f"dec.{res}x{res}"
      cout = x.shape[-1]
      if level == last:
        x = run(UNetBlock(cout, attention=True, **block, name=f"{at}_in0"), x)
        x = run(UNetBlock(cout, **block, name=f"{at}_in1"), x)
      else:
        x = run(UNetBlock(cout, up=True, **block, name=f"{at}_up"), x)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop()], axis=-1)
        attn = idx == self.num_blocks and res in self.attn_resolutions
        x = run(UNetBlock(self.model_channels * mult, attention=attn, **block,
                          name=f"{at}_block{idx}"), x)
      if self.decoder_type == "skip" or level == 0:
        if self.decoder_type == "skip" and level < last:
          aux = Conv2d(kernel=0, up=True, resample_filter=rf, name=f"{at}_aux_up")(aux)
        tmp = GroupNorm(eps=1e-6, name=f"{at}_aux_norm")(x)
        tmp = Conv2d(features=self.out_channels, kernel=3, **init_zero, dtype=self.dtype,
                     name=f"{at}_aux_conv")(nn.silu(tmp))
        aux = tmp if aux is None else tmp + aux
    return aux

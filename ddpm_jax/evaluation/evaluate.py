"""`--mode eval`: FID, KID, precision and recall of generated samples against a dataset split.

Samples are generated in chunks of config.fid.chunk_size, each written (uint8 images with
their Inception features) to WORKDIR/eval/<sampler>_step<N>_seed<S>/chunk_XXXXX.npz before
the next starts, so an interrupted run resumes at the first missing chunk; chunk i always
uses key fold_in(seed, i), so the resumed result equals an uninterrupted one. Reference
features of the split are cached once under fid.cache_dir (default WORKDIR/fid_cache), keyed
by dataset, split, resolution, count and the weights' checksum. Images are resized to
299×299 bilinearly (the choice moves FID; it is the usual one for small images).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from ddpm_jax import builders, data, files, images, parallel, train
from ddpm_jax.evaluation import fid, inception
from ddpm_jax.metrics_writer import log


def _features_device(params, batched):
  return inception.InceptionV3().apply(params, batched)


def inception_features(params, imgs_uint8: np.ndarray, mesh, batch_size: int) -> np.ndarray:
  """pool3 features [N, 2048] of uint8 images, in batches split over the mesh."""
  out = []
  for i in range(0, len(imgs_uint8), batch_size):
    chunk = imgs_uint8[i:i + batch_size]
    pad = (-len(chunk)) % mesh.size
    padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    feats = parallel.run_batched(_features_device, params, padded.astype(np.float32), mesh)
    out.append(np.asarray(feats)[:len(chunk)])
  return np.concatenate(out)


def load_weights(path: str):
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"No Inception weights at {path!r}; set fid.inception_weights to "
                            f"the converted .npz (see the README: `python -m "
                            f"ddpm_jax.evaluation.convert_inception`).")
  return inception.load_params(path), inception.file_sha256(path)


def reference_features(config, params, checksum: str, cache_dir: str, mesh) -> np.ndarray:
  f = config.fid
  source = builders.build_source(config, f.ref_split)
  n = len(source) if f.ref_num_examples <= 0 else min(f.ref_num_examples, len(source))
  name = (f"{config.data.dataset}_{f.ref_split}_{config.data.image_size}px_{n}_"
          f"{checksum[:12]}.npz")
  path = os.path.join(cache_dir, name)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as z:
      return z["features"]
  os.makedirs(cache_dir, exist_ok=True)
  feats, start = [], time.time()
  for i in range(0, n, f.chunk_size):
    idx = np.arange(i, min(i + f.chunk_size, n))
    imgs, _ = source.get(idx)
    x = images.to_uint8(data.preprocess(imgs, config.data.image_size, np.zeros(len(idx), bool)))
    feats.append(inception_features(params, x, mesh, f.inception_batch_size))
    log(f"reference features {min(i + f.chunk_size, n)}/{n} "
        f"({min(i + f.chunk_size, n) / (time.time() - start):.1f} img/s)")
  features = np.concatenate(feats)
  files.save_npz(path, features=features)
  return features


def metrics(features, ref, f) -> dict:
  """FID, KID (± std over subsets) and k-NN precision/recall of features against ref;
  `f` is config.fid. Precision/recall use equal-sized sets, as the k-NN estimate wants."""
  kid, kid_std = fid.kernel_inception_distance(features, ref, num_subsets=f.kid_subsets,
                                               subset_size=f.kid_subset_size)
  n = min(len(features), len(ref))
  precision, recall = fid.precision_recall(ref[:n], features[:n])
  return {"fid": fid.fid_from_features(features, ref), "kid": kid, "kid_std": kid_std,
          "precision": precision, "recall": recall, "precision_recall_n": n}


def evaluate(config, workdir: str) -> dict:
  """Generates config.fid.num_samples samples (resumably), then FID/KID; writes a JSON."""
  workdir = train.prepare_workdir(workdir)
  builders.validate(config)
  f, s = config.fid, config.sampling
  mesh = parallel.make_mesh()
  parallel.check_divisible(f.chunk_size, mesh, "fid.chunk_size")
  params, checksum = load_weights(f.inception_weights)
  _, shape, model, state = builders.load_trained(config, workdir)
  net_params = state.ema_params if s.use_ema else state.params
  steps = s.num_steps if s.method in ("ddim", "ode") else "full"
  run_dir = os.path.join(workdir, "eval", f"{s.method}{steps}_step{int(state.step)}_seed{s.seed}")
  os.makedirs(run_dir, exist_ok=True)
  key = jax.random.key(s.seed)
  start = time.time()
  feats, nfes, num_chunks = [], [], -(-f.num_samples // f.chunk_size)
  for i in range(num_chunks):
    path = os.path.join(run_dir, f"chunk_{i:05d}.npz")
    if not os.path.exists(path):
      stats = {}
      x = builders.sample(config, model, net_params, jax.random.fold_in(key, i), f.chunk_size,
                          shape, mesh, first_index=i * f.chunk_size, stats=stats)
      imgs = images.to_uint8(np.asarray(x))
      files.save_npz(path, images=imgs, nfe=np.float64(stats["nfe"]),
                     features=inception_features(params, imgs, mesh, f.inception_batch_size))
      done = (i + 1) * f.chunk_size
      rate = done / (time.time() - start)
      log(f"eval samples {min(done, f.num_samples)}/{f.num_samples} | {rate:.2f} img/s | "
          f"ETA {(f.num_samples - done) / rate:.0f}s")
    with np.load(path, allow_pickle=False) as z:
      feats.append(z["features"])
      nfes.append(float(z["nfe"]))
  sample_feats = np.concatenate(feats)[:f.num_samples]
  ref = reference_features(config, params, checksum, f.cache_dir or os.path.join(workdir, "fid_cache"), mesh)
  result = {**metrics(sample_feats, ref, f),
            "num_samples": int(len(sample_feats)), "num_reference": int(len(ref)),
            "sampler": s.method, "num_steps": steps, "nfe_per_sample": float(np.mean(nfes)),
            "eta": s.eta, "seed": s.seed,
            "step": int(state.step), "reference": f"{config.data.dataset}/{f.ref_split}",
            "inception_sha256": checksum, "seconds": time.time() - start}
  out = run_dir + ".json"
  files.save_json(out, result)
  log(f"FID {result['fid']:.3f}, KID {result['kid']:.5f} ± {result['kid_std']:.5f}, "
      f"precision {result['precision']:.3f}, recall {result['recall']:.3f} -> {out}")
  return result

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

from ddpm_jax import builders, data, files, images, parallel, runs
from ddpm_jax.evaluation import fid, inception
from ddpm_jax.metrics_writer import log


def make_inception_features(params, mesh, batch_size: int):
  """features(imgs_uint8) -> pool3 features [N, 2048] (np.ndarray) of uint8 images [N, H, W, 3],
  in batches of `batch_size` split over the mesh; compiled once (per batch shape)."""
  program = parallel.data_parallel(
      lambda p, x: inception.InceptionV3().apply(p, x), mesh)

  def features(imgs_uint8: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(imgs_uint8), batch_size):
      chunk = imgs_uint8[i:i + batch_size]
      pad = (-len(chunk)) % mesh.size
      padded = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(program(params, padded.astype(np.float32)))[:len(chunk)])
    return np.concatenate(out)
  return features


def load_weights(path: str):
  """(Inception params, sha256 of the file) of the .npz at `path` (~ expanded)."""
  path = os.path.expanduser(path)
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f"No Inception weights at {path!r}; convert pytorch-fid's "
                            f"pt_inception-2015-12-05-6726825d.pth there with `python -m "
                            f"ddpm_jax.evaluation.convert_inception PTH {path}` (see the "
                            f"README) or set fid.inception_weights to the converted .npz.")
  return inception.load_params(path), inception.file_sha256(path)


def reference_features(config, features_fn, checksum: str, cache_dir: str) -> np.ndarray:
  """Inception features of fid.ref_split (fid.ref_num_examples of it), computed with
  `features_fn` once and cached under cache_dir by dataset, split, size, count and weights."""
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
    feats.append(features_fn(x))
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
  f, s = config.fid, config.sampling
  run = runs.start_run(config, workdir, batch_field="fid.chunk_size")
  params, checksum = load_weights(f.inception_weights)
  net_params, step = runs.restore_params(config, run)
  features_fn = make_inception_features(params, run.mesh, f.inception_batch_size)
  sample_fn = builders.make_sampler(config, run.model, run.shape, run.mesh)
  steps = s.num_steps if s.method in ("ddim", "ode") else "full"
  run_dir = os.path.join(run.workdir, "eval", f"{s.method}{steps}_step{step}_seed{s.seed}")
  os.makedirs(run_dir, exist_ok=True)
  key = jax.random.key(s.seed)
  start = time.time()
  feats, nfes, num_chunks = [], [], -(-f.num_samples // f.chunk_size)
  for i in range(num_chunks):
    path = os.path.join(run_dir, f"chunk_{i:05d}.npz")
    if not os.path.exists(path):
      x, nfe = sample_fn(net_params, jax.random.fold_in(key, i), f.chunk_size,
                         first_index=i * f.chunk_size)
      imgs = images.to_uint8(np.asarray(x))
      files.save_npz(path, images=imgs, nfe=np.float64(nfe), features=features_fn(imgs))
      done = (i + 1) * f.chunk_size
      rate = done / (time.time() - start)
      log(f"eval samples {min(done, f.num_samples)}/{f.num_samples} | {rate:.2f} img/s | "
          f"{nfe:.0f} network evaluations each | ETA {(f.num_samples - done) / rate:.0f}s")
    with np.load(path, allow_pickle=False) as z:
      feats.append(z["features"])
      nfes.append(float(z["nfe"]))
  sample_feats = np.concatenate(feats)[:f.num_samples]
  ref = reference_features(config, features_fn, checksum,
                           f.cache_dir or os.path.join(run.workdir, "fid_cache"))
  result = {**metrics(sample_feats, ref, f),
            "num_samples": int(len(sample_feats)), "num_reference": int(len(ref)),
            "sampler": s.method, "num_steps": steps, "nfe_per_sample": float(np.mean(nfes)),
            "eta": s.eta, "seed": s.seed,
            "step": step, "reference": f"{config.data.dataset}/{f.ref_split}",
            "inception_sha256": checksum, "seconds": time.time() - start}
  out = run_dir + ".json"
  files.save_json(out, result)
  log(f"FID {result['fid']:.3f}, KID {result['kid']:.5f} ± {result['kid_std']:.5f}, "
      f"precision {result['precision']:.3f}, recall {result['recall']:.3f} -> {out}")
  return result

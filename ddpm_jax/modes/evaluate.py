"""`--mode eval`: FID, KID, precision and recall of generated samples against a dataset split.

Samples are generated in chunks of config.fid.chunk_size, each written (uint8 images with
their Inception features) to WORKDIR/eval/<name>/chunk_XXXXX.npz before the next starts, so
an interrupted run resumes at the first missing chunk; chunk i always uses key
fold_in(seed, i), so the resumed result equals an uninterrupted one. <name> (runs.results_name)
says the sampler settings and digests every setting that changes the samples (all of
config.sampling, the model, the checkpoint step and its parameters, the chunk size and the
Inception weights), so other settings never reuse these chunks; the result is
WORKDIR/eval/<name>_n<num_samples>_vs_<split><count>.json. Reference features of the split are
computed in resumable chunks too and cached once under fid.cache_dir (default
WORKDIR/fid_cache), keyed by dataset, split, resolution, count and the weights' checksum.
Images are resized to 299×299 bilinearly (the choice moves FID; it is the usual one for small
images).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from etils import epath

from ddpm_jax.data import batches
from ddpm_jax.evaluation import fid, inception
from ddpm_jax.infra import files, images, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs


def make_inception_features(params, mesh, batch_size: int):
  """features(read, n) -> pool3 features [n, 2048] (np.ndarray, on every process) of the uint8
  images [k, H, W, 3] that read(indices) returns for indices in [0, n): in batches of
  `batch_size` split over the mesh, each process reading only its rows; compiled once (per
  batch shape)."""
  program = parallel.data_parallel(
      lambda p, x: inception.InceptionV3().apply(p, x), mesh)

  def features(read, n: int) -> np.ndarray:
    out = []
    for i in range(0, n, batch_size):
      idx = np.arange(i, min(i + batch_size, n))
      padded = np.pad(idx, (0, (-len(idx)) % mesh.size), mode="edge")  # rows dropped below
      x = read(padded[parallel.local_rows(len(padded))]).astype(np.float32)
      out.append(parallel.to_host(program(params, parallel.shard_batch(x, mesh)))[:len(idx)])
    return np.concatenate(out)
  return features


def reference_features(config, source, n: int, features_fn, checksum: str,
                       cache_dir: str) -> np.ndarray:
  """Inception features of the first n images of `source` (fid.ref_split), computed with
  `features_fn` and cached under cache_dir by dataset, split, size, count and weights. The
  pass goes in resumable chunks of fid.chunk_size (kept until the cache file is written)."""
  f = config.fid
  name = f"{config.data.dataset}_{f.ref_split}_{config.data.image_size}px_{n}_{checksum[:12]}"
  path = os.path.join(cache_dir, name + ".npz")
  if parallel.agree(files.exists(path)):
    return files.load_npz(path)["features"]

  def read(rows):
    imgs, _ = source.get(rows)
    return images.to_uint8(batches.preprocess(imgs, config.data.image_size,
                                           np.zeros(len(rows), bool)))
  start, made = time.time(), []

  def make(i):
    lo = i * f.chunk_size
    made.append(min(f.chunk_size, n - lo))
    feats = features_fn(lambda rows: read(rows + lo), made[-1])
    rate = sum(made) / (time.time() - start)
    log(f"reference features {lo + made[-1]}/{n} ({rate:.1f} img/s, ETA "
        f"{(n - lo - made[-1]) / rate:.0f}s)")
    return {"features": feats}
  chunk_dir = os.path.join(cache_dir, name + "_chunks")
  chunks = runs.resumable_chunks(chunk_dir, -(-n // f.chunk_size), make)
  features = np.concatenate([c["features"] for c in chunks])
  if parallel.is_main_process():
    files.save_npz(path, features=features)
    epath.Path(chunk_dir).rmtree()  # the cache file holds them all now
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


def evaluate(config, workdir: str, overrides=None) -> dict:
  """Generates config.fid.num_samples samples (resumably), then FID/KID; writes a JSON named
  after every setting that made it (runs.results_name)."""
  f, s = config.fid, config.sampling
  run = runs.start_run(config, workdir, "eval", overrides)
  (ref_source, n_ref), sample_fn = run.plan.reference, run.plan.sample_fn
  params, checksum = inception.load_weights(f.inception_weights)
  net_params, step = runs.restore_params(config, run)
  features_fn = make_inception_features(params, run.mesh, f.inception_batch_size)
  name, settings = runs.results_name(config, step, net_params, "eval", chunk_size=f.chunk_size,
                                     inception_sha256=checksum)
  run_dir = os.path.join(run.workdir, "eval", name)
  key = jax.random.key(s.seed)
  start = time.time()

  def make(i):
    x, nfe = sample_fn(net_params, jax.random.fold_in(key, i), f.chunk_size,
                       first_index=i * f.chunk_size)
    imgs = images.to_uint8(parallel.to_host(x))
    feats = features_fn(lambda rows: imgs[rows], len(imgs))
    done = (i + 1) * f.chunk_size
    rate = done / (time.time() - start)
    log(f"eval samples {min(done, f.num_samples)}/{f.num_samples} | {rate:.2f} img/s | "
        f"{nfe:.0f} network evaluations each | ETA {(f.num_samples - done) / rate:.0f}s")
    return {"images": imgs, "nfe": np.float64(nfe), "features": feats}
  chunks = runs.resumable_chunks(run_dir, -(-f.num_samples // f.chunk_size), make)
  nfes = [float(c["nfe"]) for c in chunks]
  sample_feats = np.concatenate([c["features"] for c in chunks])[:f.num_samples]
  ref = reference_features(config, ref_source, n_ref, features_fn, checksum,
                           f.cache_dir or os.path.join(run.workdir, "fid_cache"))
  result = {**metrics(sample_feats, ref, f),
            "num_samples": int(len(sample_feats)), "num_reference": int(len(ref)),
            "sampler": s.method, "nfe_per_sample": float(np.mean(nfes)),
            "reference": f"{config.data.dataset}/{f.ref_split}",
            "kid_subsets": f.kid_subsets, "kid_subset_size": f.kid_subset_size,
            "seconds": time.time() - start, "settings": settings}
  out = f"{run_dir}_n{f.num_samples}_vs_{f.ref_split}{n_ref}.json"
  if parallel.is_main_process():
    files.save_json(out, result)
  log(f"FID {result['fid']:.3f}, KID {result['kid']:.5f} ± {result['kid_std']:.5f}, "
      f"precision {result['precision']:.3f}, recall {result['recall']:.3f} -> {out}")
  return result

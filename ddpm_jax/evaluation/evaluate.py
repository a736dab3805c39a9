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
  if parallel.agree(files.exists(path)):
    return files.load_npz(path)["features"]

  def read(rows):
    imgs, _ = source.get(rows)
    return images.to_uint8(data.preprocess(imgs, config.data.image_size,
                                           np.zeros(len(rows), bool)))
  feats, start = [], time.time()
  for i in range(0, n, f.chunk_size):
    m = min(f.chunk_size, n - i)
    feats.append(features_fn(lambda rows: read(rows + i), m))  # noqa: B023 (called at once)
    log(f"reference features {i + m}/{n} ({(i + m) / (time.time() - start):.1f} img/s)")
  features = np.concatenate(feats)
  if parallel.is_main_process():
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
  ref = reference_features(config, features_fn, checksum,
                           f.cache_dir or os.path.join(run.workdir, "fid_cache"))
  result = {**metrics(sample_feats, ref, f),
            "num_samples": int(len(sample_feats)), "num_reference": int(len(ref)),
            "sampler": s.method, "num_steps": steps, "nfe_per_sample": float(np.mean(nfes)),
            "eta": s.eta, "seed": s.seed,
            "step": step, "reference": f"{config.data.dataset}/{f.ref_split}",
            "inception_sha256": checksum, "seconds": time.time() - start}
  out = run_dir + ".json"
  if parallel.is_main_process():
    files.save_json(out, result)
  log(f"FID {result['fid']:.3f}, KID {result['kid']:.5f} ± {result['kid_std']:.5f}, "
      f"precision {result['precision']:.3f}, recall {result['recall']:.3f} -> {out}")
  return result

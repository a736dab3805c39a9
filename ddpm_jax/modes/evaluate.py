"""`--mode eval`: FID (and KID, precision, recall, Inception Score) of generated samples
against a reference, as this config's fid.* fields or a paper's protocol (fid.protocol,
evaluation/protocols.py: the sample count, the reference split, the resize and the seeds).

Samples are generated in chunks of config.fid.chunk_size, each written (uint8 images with
their Inception features) to WORKDIR/eval/<name>/chunk_XXXXX.npz before the next starts, so
an interrupted run resumes at the first missing chunk; chunk i always uses key
fold_in(seed, i), so the resumed result equals an uninterrupted one. <name> (runs.results_name)
says the sampler settings and digests every setting that changes the samples (all of
config.sampling, the model, the checkpoint step and its parameters, the chunk size, the
Inception weights, the resize), so other settings never reuse these chunks. With several seeds
(fid.num_seeds; EDM's protocol: 3) each seed sampling.seed + k has its own chunks and FID, and
the lowest is reported, as EDM did. The result is WORKDIR/eval/<name>_n<N>_vs_<ref>.json,
with the samples' (μ, Σ) beside it as <name>_stats.npz in the format the FID tools publish.

The reference: published statistics (fid.reference_stats: a pytorch-fid/EDM mu-sigma .npz,
or score_sde's pool_3 features), or the features of the reference split, computed in
resumable chunks and cached once under fid.cache_dir (default WORKDIR/fid_cache) by dataset,
split, resolution, count, resize and the weights' checksum, with their (μ, Σ) beside them.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from etils import epath

from ddpm_jax.config import build
from ddpm_jax.data import batches
from ddpm_jax.evaluation import fid, inception, protocols
from ddpm_jax.infra import files, images, parallel
from ddpm_jax.infra.metrics_writer import log
from ddpm_jax.modes import runs


def make_inception_features(params, mesh, batch_size: int, resize: str = "bilinear",
                            logits: bool = False):
  """features(read, n) -> pool3 features [n, 2048] (np.ndarray, on every process) of the uint8
  images [k, H, W, 3] that read(indices) returns for indices in [0, n), resized to 299 as
  `resize` says; with `logits` (weights that have the classifier) (features, logits [n,
  1008]). In batches of `batch_size` split over the mesh, each process reading only its rows;
  compiled once (per batch shape)."""
  net = inception.InceptionV3(resize=resize, logits=logits)
  program = parallel.data_parallel(lambda p, x: net.apply(p, x), mesh)

  def features(read, n: int):
    out = []
    for i in range(0, n, batch_size):
      idx = np.arange(i, min(i + batch_size, n))
      padded = np.pad(idx, (0, (-len(idx)) % mesh.size), mode="edge")  # rows dropped below
      x = read(padded[parallel.local_rows(len(padded))]).astype(np.float32)
      y = program(params, parallel.shard_batch(x, mesh))
      out.append(jax.tree.map(lambda a: parallel.to_host(a)[:len(idx)], y))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *out)
  return features


def reference_features(config, source, n: int, features_fn, checksum: str,
                       cache_dir: str) -> np.ndarray:
  """Inception features of the first n images of `source` (fid.ref_split), computed with
  `features_fn` and cached under cache_dir by dataset, split, size, count and weights. The
  pass goes in resumable chunks of fid.chunk_size (kept until the cache file is written)."""
  f, protocol = config.fid, build.fid_protocol(config)
  name = (f"{config.data.dataset}_{protocol.ref_split}_{config.data.image_size}px_{n}_"
          f"{protocol.resize}_{checksum[:12]}")
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
    fid.save_statistics(os.path.join(cache_dir, name + "_stats.npz"), *fid.statistics(features))
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


# The fields this mode reads besides those its build reads (config/reads.py; the build reads
# the reference's fid.ref_split, ref_num_examples, resize and num_seeds where no protocol
# fixes them).
READS = ("fid.protocol", "fid.num_samples", "fid.reference_stats", "fid.is_splits",
         "fid.chunk_size", "fid.inception_batch_size", "fid.inception_weights", "fid.cache_dir",
         "fid.kid_subsets", "fid.kid_subset_size", "sampling.seed", "sampling.use_ema",
         "data.dataset", "data.image_size")


def evaluate(config, workdir: str, overrides=None) -> dict:
  """Generates fid.num_samples samples per seed (resumably), then the metrics; writes a JSON
  named after every setting that made it (runs.results_name) and says which protocol."""
  f = config.fid
  run = runs.start_run(config, workdir, "eval", overrides, READS)
  protocol = build.fid_protocol(config)
  params, checksum = inception.load_weights(f.inception_weights)
  net_params, step = runs.restore_params(config, run)
  logits = inception.has_logits(params)
  features_fn = make_inception_features(params, run.mesh, f.inception_batch_size,
                                        protocol.resize, logits)
  reference = run.plan.reference
  if reference.stats is not None:
    mu_ref, sigma_ref, ref = reference.stats
    ref_name = os.path.basename(f.reference_stats)
  else:
    ref = reference_features(config, reference.source, reference.count,
                             lambda read, n: _pool3(features_fn(read, n)), checksum,
                             f.cache_dir or os.path.join(run.workdir, "fid_cache"))
    mu_ref, sigma_ref = fid.statistics(ref)
    ref_name = f"{protocol.ref_split}{reference.count}"
  start, seeds = time.time(), []
  for k in range(protocol.num_seeds):
    seeds.append(_one_seed(config, run, step, net_params, features_fn, checksum, protocol,
                           config.sampling.seed + k, start))
  per_seed = [fid.frechet_distance(*fid.statistics(x["features"]), mu_ref, sigma_ref)
              for x in seeds]
  first = seeds[0]
  others = metrics(first["features"], ref, f) if ref is not None else {}  # KID, P/R: seed 1
  others.pop("fid", None)
  result = {"fid": min(per_seed), "fid_per_seed": per_seed,  # EDM: the lowest of the seeds
            "seeds": [x["seed"] for x in seeds], **others,
            "protocol": _protocol_entry(config, protocol),
            "num_samples": int(len(first["features"])),
            "num_reference": int(len(ref)) if ref is not None else None,
            "reference": f.reference_stats or f"{config.data.dataset}/{protocol.ref_split}",
            "sampler": config.sampling.method, "nfe_per_sample": first["nfe"],
            "kid_subsets": f.kid_subsets, "kid_subset_size": f.kid_subset_size,
            "seconds": time.time() - start, "settings": first["settings"]}
  if logits:
    scores = [fid.inception_score(x["logits"], f.is_splits) for x in seeds]
    result.update(inception_score=scores[0][0], inception_score_std=scores[0][1],
                  inception_score_per_seed=[m for m, _ in scores])
  else:
    result["inception_score"] = None
    result["inception_score_note"] = (
        "the Inception weights have no 1008-way classifier (logits); convert pytorch-fid's .pth "
        "with this version's convert_inception, which keeps it")
  out = f"{first['stem']}_n{f.num_samples}_vs_{ref_name}.json"
  if parallel.is_main_process():
    files.save_json(out, result)
  is_text = (f", IS {result['inception_score']:.2f}" if logits else "")
  log(f"FID {result['fid']:.3f} ({protocol.num_seeds} seed(s): "
      f"{', '.join(f'{v:.3f}' for v in per_seed)}){is_text} [{result['protocol']['name']}] "
      f"-> {out}")
  return result


def _pool3(out):
  return out[0] if isinstance(out, tuple) else out


def _protocol_entry(config, protocol) -> dict:
  name = config.fid.protocol or "config"
  published = protocols.PROTOCOLS.get(config.fid.protocol)
  return {"name": name, "tool": protocol.tool, "num_samples": protocol.num_samples,
          "ref_split": protocol.ref_split, "resize": protocol.resize,
          "num_seeds": protocol.num_seeds,
          "reported": "the lowest of the seeds" if protocol.num_seeds > 1 else "one seed",
          "as_published": published is None or protocol.num_samples == published.num_samples}


def _one_seed(config, run, step, net_params, features_fn, checksum, protocol, seed: int,
              start: float) -> dict:
  """The samples of one seed (resumable chunks): features, logits, NFE, the results name."""
  f = config.fid
  seeded = config.copy_and_resolve_references()
  seeded.sampling.seed = seed
  name, settings = runs.results_name(seeded, run.plan.reads, step, net_params,
                                     chunk_size=f.chunk_size, inception_sha256=checksum,
                                     resize=protocol.resize)
  run_dir = os.path.join(run.workdir, "eval", name)
  key, sample_fn = jax.random.key(seed), run.plan.sample_fn

  def make(i):
    x, nfe = sample_fn(net_params, jax.random.fold_in(key, i), f.chunk_size,
                       first_index=i * f.chunk_size)
    imgs = images.to_uint8(parallel.to_host(x))
    out = features_fn(lambda rows: imgs[rows], len(imgs))
    done = (i + 1) * f.chunk_size
    rate = done / (time.time() - start)
    log(f"eval samples (seed {seed}) {min(done, f.num_samples)}/{f.num_samples} | "
        f"{rate:.2f} img/s | {nfe:.0f} evaluations each | ETA "
        f"{(f.num_samples - done) / rate:.0f}s")
    chunk = {"images": imgs, "nfe": np.float64(nfe), "features": _pool3(out)}
    if isinstance(out, tuple):
      chunk["logits"] = out[1]
    return chunk
  chunks = runs.resumable_chunks(run_dir, -(-f.num_samples // f.chunk_size), make)
  joined = {k: np.concatenate([c[k] for c in chunks])[:f.num_samples]
            for k in ("features", "logits") if k in chunks[0]}
  if parallel.is_main_process():
    fid.save_statistics(f"{run_dir}_stats.npz", *fid.statistics(joined["features"]))
  return {**joined, "seed": seed, "stem": run_dir, "settings": settings,
          "nfe": float(np.mean([float(c["nfe"]) for c in chunks]))}

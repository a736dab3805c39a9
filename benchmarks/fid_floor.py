"""The FID/KID floor of a dataset: real images of one split against the reference split.

  python benchmarks/fid_floor.py --config configs/fashion_mnist_ddpm.py --split train \
      --config.data.data_dir=../shared/tfds_array_record \
      --config.fid.inception_weights=../shared/weights/inception_fid.npz

Uses the first fid.ref_num_examples images of --split (same preprocessing as training:
resize to data.image_size) against the cached reference features of fid.ref_split, so a
model's FID can be read against what real data of the same size scores. One JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.config import build  # noqa: E402
from ddpm_jax.evaluation import inception  # noqa: E402
from ddpm_jax.infra import parallel  # noqa: E402
from ddpm_jax.modes import evaluate  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_string("split", "train", "The split scored against fid.ref_split.")
flags.DEFINE_string("cache_dir", "/tmp/fid_cache", "Where reference features are cached.")


def main(_) -> None:
  config = flags.FLAGS.config
  f = config.fid
  mesh = parallel.make_mesh()
  params, checksum = inception.load_weights(f.inception_weights)
  features = evaluate.make_inception_features(params, mesh, f.inception_batch_size)
  start = time.time()
  ref = evaluate.reference_features(config, *build.reference(config), features,
                                    checksum, flags.FLAGS.cache_dir)
  ref_split, f.ref_split = f.ref_split, flags.FLAGS.split
  other = evaluate.reference_features(config, *build.reference(config), features,
                                      checksum, flags.FLAGS.cache_dir)
  print(json.dumps({"what": "fid_floor", "dataset": config.data.dataset,
                    "split": flags.FLAGS.split, "reference": ref_split,
                    "num": len(other), "num_reference": len(ref),
                    **evaluate.metrics(other, ref, f), "seconds": time.time() - start}), flush=True)


if __name__ == "__main__":
  app.run(main)

"""Writes the splits of a prepared tfds dataset as OUT/<name>_<split>.npz (`images` uint8,
`labels`), for machines without tfds; train with --config.data.dataset=npz and
--config.data.path=OUT/<name>_{split}.npz.

  python benchmarks/tfds_to_npz.py fashion_mnist --data_dir ../shared/tfds_array_record --out /tmp/fm
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ddpm_jax.data import sources
from ddpm_jax.infra import files


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("name")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--splits", default="train,test")
  args = p.parse_args()
  os.makedirs(args.out, exist_ok=True)
  for split in args.splits.split(","):
    source = sources.open_source(args.name, split, args.data_dir)
    images, labels = source.get(np.arange(len(source)))
    path = os.path.join(args.out, f"{args.name}_{split}.npz")
    files.save_npz(path, compressed=True, images=np.stack(images),
                   labels=np.asarray(labels, np.int32))
    print(f"{split}: {len(source)} images -> {path}")


if __name__ == "__main__":
  main()

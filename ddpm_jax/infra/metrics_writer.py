"""Where progress goes: a console line, TensorBoard event files (tensorboardX, no TensorFlow)
and a metrics.jsonl file in the workdir. Only the first host writes."""

from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np
from etils import epath

from ddpm_jax.infra import files


class MetricsWriter:
  """Scalars to TensorBoard and to WORKDIR/metrics.jsonl (appended; on an object store such
  as gs://, which cannot append, the file is rewritten whole at each call). A run resumed at
  step `resumed_at` first drops the file's rows of later steps (they are redone) and any
  row a kill cut short."""

  def __init__(self, workdir: str, resumed_at: int = 0):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import (
        SummaryWriter,  # imported here: only the first host writes
      )
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self.jsonl = epath.Path(workdir) / "metrics.jsonl"
      self.appends = not files.is_uri(workdir)
      rows = self.jsonl.read_text().splitlines(keepends=True) if self.jsonl.exists() else []
      self.lines = [row for row in rows if _step(row) <= resumed_at]
      if self.lines != rows:
        with files.atomic_open(str(self.jsonl), "w") as f:
          f.write("".join(self.lines))

  def scalars(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in values.items()}
    for k, v in values.items():
      self.tb.add_scalar(k, v, step)
    line = json.dumps({"step": step, "time": time.time(), **values}) + "\n"
    if self.appends:
      with self.jsonl.open("a") as f:
        f.write(line)
    else:
      self.lines.append(line)
      self.jsonl.write_text("".join(self.lines))

  def image(self, step: int, name: str, grid: np.ndarray) -> None:
    """grid: uint8 [H, W, C]."""
    if self.enabled:
      self.tb.add_image(name, grid, step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


def _step(row: str) -> float:
  """The step of a complete metrics.jsonl row; infinity for a row a kill cut short."""
  try:
    return json.loads(row)["step"] if row.endswith("\n") else np.inf
  except (ValueError, KeyError):
    return np.inf


def progress_line(step: int, total: int, metrics: dict, images_per_sec: float | None = None,
                  eta_sec: float = 0.0, data_wait: float = 0.0) -> str:
  """'step 1200/5000 (24%) loss 0.0712 | 310 img/s | data wait 1% | ETA 3m12s', data_wait
  the fraction of the time the loop waited for its next batch; without a rate (the first
  step, which compiles) only the step and loss."""
  head = f"step {step}/{total} ({100 * step / total:.0f}%) loss {metrics['loss']:.4f}"
  if images_per_sec is None:
    return head
  eta = f"{int(eta_sec // 3600)}h{int(eta_sec % 3600 // 60):02d}m" if eta_sec >= 3600 else \
      f"{int(eta_sec // 60)}m{int(eta_sec % 60):02d}s"
  return f"{head} | {images_per_sec:.0f} img/s | data wait {100 * data_wait:.0f}% | ETA {eta}"


def log(msg: str) -> None:
  logging.info(msg)
  if jax.process_index() == 0:
    print(msg, flush=True)

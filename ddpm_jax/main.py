"""Command line: python -m ddpm_jax.main --config configs/X.py --workdir DIR
[--mode train|sample|bpd|eval] [--config.field=value ...].

  train   train, or resume from the newest readable checkpoint (train.py); after SIGTERM or
          SIGINT it saves and exits 143 or 130 (128 + the signal), so that a scheduler can
          tell a stopped run from a finished one (exit 0) or a failed one (1, or 2 for a
          one-line error)
  sample  samples from the latest checkpoint as a PNG grid and an .npz (generate.py)
  bpd     bits/dim of a data split (bpd.py)
  eval    FID, KID, precision and recall of samples against a data split (evaluation/)
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from ddpm_jax import bpd, checkpoint, generate, parallel, train
from ddpm_jax.evaluation import evaluate

MODES = ("train", "sample", "bpd", "eval")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", MODES, "What to do.")
flags.DEFINE_bool("distributed", False, "Join a multi-process run first (one process per host "
                  "of a TPU pod slice, or per GPU or node of a GPU cluster): see the three "
                  "flags below; where they are unset, JAX detects them on Cloud TPU, SLURM "
                  "and Open MPI.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, with --distributed "
                    "(default: $JAX_COORDINATOR_ADDRESS, else auto-detected).")
flags.DEFINE_integer("num_processes", None, "Processes in the run, with --distributed "
                     "(default: $JAX_NUM_PROCESSES, else auto-detected).")
flags.DEFINE_integer("process_id", None, "This process's index, with --distributed "
                     "(default: $JAX_PROCESS_ID, else auto-detected).")
flags.mark_flags_as_required(["config", "workdir"])

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, checkpoint.CheckpointError,
               train.NonFiniteLossError)


def parse_flags(argv):
  """absl flag parsing with one-line errors for an unknown config field or a bad value."""
  try:
    argv = FLAGS(argv)
  except SyntaxError as e:  # the config file does not parse
    _fail(f"config file {e.filename} line {e.lineno}: {e.msg}; fix the file.")
  except (AttributeError, KeyError) as e:  # ml_collections: no such field
    if "get_config" in str(e):
      _fail(f"config file {_config_argument(argv)} defines no get_config(); define one that "
            f"returns an ml_collections.ConfigDict (see configs/demo.py).")
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    parts = [p.strip(" '\"") for p in text.splitlines() if p.strip(" '\"")]
    _fail(f"unknown config field {'; '.join(parts)} (the fields are in configs/default.py)")
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except Exception as e:  # noqa: BLE001 (the config file raised while it was loaded)
    path = os.path.abspath(_config_argument(argv))
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    where = f" line {lines[-1]}" if lines else ""
    _fail(f"config file {_config_argument(argv)}{where}: {type(e).__name__}: {e}; fix the "
          f"file.")
  path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
  if not os.path.isfile(path):
    _fail(f"no config file {path!r}; pass one of configs/*.py (run from the repository root).")
  return argv


def _config_argument(argv) -> str:
  """The path given to --config (without a ":arguments" suffix)."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":")[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":")[0]
  return "?"


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}; pass options as --flag=value.")
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  if FLAGS.distributed:
    parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  elif FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.process_id is not None:
    _fail("--coordinator_address, --num_processes and --process_id need --distributed.")
  try:
    if FLAGS.mode == "train":
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "sample":
      generate.sample_from_checkpoint(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "bpd":
      bpd.evaluate_bpd(FLAGS.config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
      evaluate.evaluate(FLAGS.config, FLAGS.workdir)
  except USER_ERRORS as e:
    _fail(str(e))
  except train.Interrupted as e:  # saved; resumable
    sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

"""Command line: python -m ddpm_jax.main --config NAME|FILE.py --workdir DIR
[--mode train|sample|bpd|eval|import|export|edit|phema] [--config.field=value ...].

  train   train, or resume from the newest readable checkpoint (train.py); after SIGTERM or
          SIGINT it saves and exits 143 or 130 (128 + the signal), so that a scheduler can
          tell a stopped run from a finished one (exit 0) or a failed one (1, or 2 for a
          one-line error)
  sample  samples from the latest checkpoint as a PNG grid and an .npz (modes/sample.py)
  bpd     bits/dim of a data split (modes/bpd.py)
  eval    FID, KID, precision and recall of samples against a data split (modes/evaluate.py)
  import  published weights as the workdir's first checkpoint, with --import_from=
          diffusers:FOLDER, score_sde:FILE or edm:FILE (modes/import_weights.py)
  export  the latest checkpoint for other libraries, with --export_to=diffusers:FOLDER or
          edm:FILE.npz (modes/export_weights.py)
  edit    SDEdit and inpainting of the images of edit.input (edit.t_start, edit.mask) with the
          configured sampler, as a PNG grid and an .npz (modes/edit.py)
  phema   the EMA of length phema.sigma_rel reconstructed from post-hoc EMA snapshots
          (training.phema_sigma_rels), written as a new workdir (modes/phema.py)

Every mode passes the config gate first (config/validate.py): a bad value, or a --config.*
setting that the chosen objective, sampler or mode does not read, is one line on stderr
(exit 2) before anything is written. SIGINT or SIGTERM at any other moment than train's loop
(which saves first) stops the command with one line on stderr and exit status 130 or 143;
what it had finished (checkpoints, sample and eval chunks) stays, and the same command
resumes.
"""

from __future__ import annotations

import os
import signal
import sys


def _stop_while_starting(signum, _):
  """Before main() runs (imports, flag parsing): nothing is written yet; exit at once."""
  sys.stderr.write(f"stopped: {signal.Signals(signum).name} while starting; nothing was "
                   f"written.\n")
  os._exit(128 + signum)


if __name__ == "__main__":  # the command line only: a program importing this module keeps its own
  for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, _stop_while_starting)

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from ddpm_jax import configs
from ddpm_jax.config import load
from ddpm_jax.infra import lock, parallel
from ddpm_jax.modes import (
  bpd,
  edit,
  evaluate,
  export_weights,
  import_weights,
  phema,
  reflow,
  sample,
  train,
)
from ddpm_jax.training import checkpoint

MODES = {"train": train.train_and_evaluate, "sample": sample.sample_from_checkpoint,
         "bpd": bpd.evaluate_bpd, "eval": evaluate.evaluate,
         "import": import_weights.import_weights, "export": export_weights.export_weights,
         "edit": edit.edit_images, "phema": phema.reconstruct_ema,
         "reflow": reflow.draw_pairs}
PATH_FLAGS = {"import": ("import_from", "source"), "export": ("export_to", "target")}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A shipped config's name (demo, "
                                "cifar10_ddpm, …) or the path of a config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to do.")
flags.DEFINE_string("import_from", None, "With --mode import: FORMAT:PATH of the weights, "
                    "diffusers:FOLDER (a UNet2DModel folder or pipeline), score_sde:FILE (a "
                    "Flax checkpoint_N or PyTorch .pth), edm:FILE (an exported state dict), "
                    "adm:FILE (an OpenAI guided-diffusion .pt) or ncsnv2:FILE (ermongroup/"
                    "ncsnv2's checkpoint_N.pth).")
flags.DEFINE_string("export_to", None, "With --mode export: FORMAT:PATH to write, "
                    "diffusers:FOLDER (the DDPM U-Net as a DDPMPipeline folder) or edm:FILE.npz "
                    "(SongUNet/DhariwalUNet as EDM's state dict).")
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
flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for every process to join, "
                     "with --distributed.", lower_bound=1)
flags.mark_flags_as_required(["config", "workdir"])

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, checkpoint.CheckpointError,
               train.NonFiniteLossError, lock.WorkdirLocked)


class Stopped(BaseException):
  """SIGTERM outside train's loop (SIGINT raises KeyboardInterrupt), raised where the program
  is, so that files being written are abandoned as a crash would leave them (atomically)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def parse_flags(argv):
  """absl flag parsing with one-line errors for an unknown config field or a bad value; a
  shipped config may be named (--config demo) instead of given by path."""
  argv = sys.argv = _config_paths(argv)
  try:
    argv = FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: no such field (or no get_config)
    if "get_config" in str(e):
      _fail(load.file_error(_config_argument(argv), e))
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    parts = [p.strip(" '\"") for p in text.splitlines() if p.strip(" '\"")]
    _fail(f"unknown config field {'; '.join(parts)} (the fields are in docs/config.md)")
  except flags.Error as e:
    _fail(str(e).splitlines()[0])
  except Exception as e:  # noqa: BLE001 (the config file raised while it was loaded)
    _fail(load.file_error(_config_argument(argv), e))
  path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
  if not os.path.isfile(path):
    _fail(f"no config file {path!r}; pass a shipped config's name ({', '.join(configs.names())}) "
          f"or the path of a config file.")
  if not isinstance(FLAGS.config, ml_collections.ConfigDict):
    _fail(f"config file {path}: get_config() returned a value of type "
          f"{type(FLAGS.config).__name__}, not an ml_collections.ConfigDict; return one (see "
          f"ddpm_jax/configs/demo.py).")
  return argv


def _config_paths(argv) -> list[str]:
  """argv with a shipped config's name given to --config (e.g. demo, or demo:arg) replaced
  by its file's path; paths are left as they are."""
  out, found = list(argv), _config_position(argv)
  if found:
    at, prefix = found
    name, colon, argument = out[at][len(prefix):].partition(":")
    if name in configs.names():
      out[at] = prefix + configs.path(name) + colon + argument
  return out


def command_line_overrides() -> list[str]:
  """The --config.* fields set on the command line to a value other than the config file's
  own (setting a field to the value it already has changes nothing, so it is not checked)."""
  given = config_flags.get_override_values(FLAGS["config"])
  base = load.load(_config_argument(sys.argv, with_argument=True))

  def restates(name, v) -> bool:  # the file's own value (a field it lacks is never one)
    try:
      node, leaf = load.parent(base, name)
    except ValueError:
      return False
    return node[leaf] == v
  _check_tuple_texts(base, sys.argv)
  return [name for name, v in given.items() if not restates(name, v)]


def _check_tuple_texts(base, argv) -> None:
  """A tuple field given a scalar on the command line (ml_collections would make 2 into (2,))
  is refused: the text must be a tuple or list."""
  for i, arg in enumerate(argv):
    if not arg.startswith("--config."):
      continue
    name, equals, text = arg[len("--config."):].partition("=")
    if not equals:
      text = argv[i + 1] if i + 1 < len(argv) else ""
    try:
      node, leaf = load.parent(base, name)
    except ValueError:
      continue
    if isinstance(node[leaf], tuple) and not text.strip().startswith(("(", "[")):
      _fail(f"--config.{name}={text} is a tuple field; write it as one, e.g. "
            f"--config.{name}='({text},)'.")


def _config_position(argv) -> tuple[int, str] | None:
  """(index in argv, prefix before the value) of --config's value: ("--config=X") or
  ("--config", "X"); None where it is not given."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return i, "--config="
    if arg == "--config" and i + 1 < len(argv):
      return i + 1, ""
  return None


def _config_argument(argv, with_argument: bool = False) -> str:
  """The path given to --config (without a ":arguments" suffix)."""
  found = _config_position(argv)
  if found is None:
    return "?"
  at, prefix = found
  value = argv[at][len(prefix):]
  return value if with_argument else value.split(":")[0]


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _raise_stopped(signum, _):
  raise Stopped(signum)


def main(argv) -> None:
  old = signal.signal(signal.SIGTERM, _raise_stopped)
  old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _run_mode(argv)
  except KeyboardInterrupt:
    _stopped(signal.SIGINT)
  except Stopped as e:
    _stopped(e.signum)
  finally:
    signal.signal(signal.SIGTERM, old)
    signal.signal(signal.SIGINT, old_int)


def _stopped(signum: int) -> None:
  print(f"stopped: {signal.Signals(signum).name} during --mode {FLAGS.mode}; what was "
        f"finished is kept (checkpoints, sample and eval chunks): run the same command to "
        f"resume.", file=sys.stderr)
  sys.exit(128 + signum)


def _join(argv) -> None:
  """Checks the command line's shape and joins a multi-process run (--distributed)."""
  if len(argv) > 1:
    _fail(f"unexpected argument {argv[1]!r}; options are --flag=value (e.g. "
          f"--config.training.batch_size=64); --helpfull lists them.")
  if not FLAGS.workdir.strip():
    _fail("--workdir is empty; give the run's directory, e.g. --workdir=runs/demo.")
  if FLAGS.distributed:
    try:
      parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                          FLAGS.distributed_timeout)
    except Exception as e:  # noqa: BLE001 (JAX raises ValueError, RuntimeError, XlaRuntimeError)
      _fail(f"--distributed could not join the run ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no detail'}); give "
            f"--coordinator_address=HOST:PORT, --num_processes and --process_id (or "
            f"JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), start every "
            f"process within --distributed_timeout={FLAGS.distributed_timeout}s, or drop "
            f"--distributed for one process.")
  elif FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.process_id is not None:
    _fail("--coordinator_address, --num_processes and --process_id need --distributed.")


def _run_mode(argv) -> None:
  logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  _join(argv)
  paths = {}
  for mode, (flag, argument) in PATH_FLAGS.items():
    if (FLAGS.mode == mode) != bool(FLAGS[flag].value):
      _fail(f"--mode {mode} needs --{flag}=FORMAT:PATH, and --{flag} needs --mode {mode}.")
    if FLAGS.mode == mode:
      paths[argument] = FLAGS[flag].value
  try:
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir, overrides=command_line_overrides(), **paths)
  except USER_ERRORS as e:
    _fail(str(e))
  except train.Interrupted as e:  # saved; resumable
    sys.exit(e.exit_code)


def _quiet_after(code) -> None:
  """After a failure's one line nothing more reaches stderr: reads of a damaged checkpoint
  that were pending when it failed may still print, at interpreter shutdown, tracebacks of
  orbax's closed event loop from tensorstore's threads (training/checkpoint.py)."""
  if code not in (0, None):
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)


if __name__ == "__main__":
  try:
    app.run(main, flags_parser=parse_flags)
  except SystemExit as e:
    _quiet_after(e.code)
    raise

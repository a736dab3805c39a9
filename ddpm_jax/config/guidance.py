"""The classifier that guides a sampler (sampling.classifier_scale > 0): the run in
sampling.classifier_workdir, its config.json read (nothing in it runs) and checked against the
model's — a classifier of another process, image size or set of classes is refused in one
line — and its network built for the Denoiser (core/denoiser.py classifier_guided).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from ddpm_jax.config import build, load
from ddpm_jax.infra import files

@dataclasses.dataclass(frozen=True)
class Classifier:
  """The guiding classifier: its network, the shapes of its checkpoint and where they are."""
  config: Any         # its run's ConfigDict
  module: Any         # models/half_unet.py HalfUNet
  template: Any       # its TrainState's shapes and dtypes
  checkpoint_dir: str
  num_classes: int


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a run (a one-line FileNotFoundError if it has none)."""
  path = os.path.join(files.resolve(workdir), "config.json")
  if not files.exists(path):
    raise FileNotFoundError(f"sampling.classifier_workdir={workdir!r} has no config.json: "
                            f"give the workdir of a training.objective 'classifier' run "
                            f"(--mode train with a classifier config, e.g. "
                            f"the shipped config digits_classifier).")
  return load.run_config(path)


def classifier(config, shape) -> Classifier | None:
  """The classifier of sampling.classifier_workdir, checked against `config` (the guided
  model's), or None where sampling.classifier_scale is 0."""
  s = config.sampling
  if not s.classifier_scale:
    return None
  if not s.classifier_workdir:
    raise ValueError(f"sampling.classifier_scale={s.classifier_scale:g} needs a classifier: "
                     f"set sampling.classifier_workdir to the workdir of a training.objective "
                     f"'classifier' run, or set the scale to 0.")
  clf = read_config(s.classifier_workdir)
  where = f"sampling.classifier_workdir={s.classifier_workdir!r}"
  if clf.training.objective != "classifier":
    raise ValueError(f"{where} is a training.objective {clf.training.objective!r} run, not a "
                     f"classifier; give a training.objective 'classifier' run's workdir.")
  objective = build.network_objective(config)
  if clf.classifier.process != objective:
    raise ValueError(f"{where} classifies the process of objective "
                     f"{clf.classifier.process!r}, this model is {objective!r}: train a classifier "
                     f"with classifier.process={objective!r} and this model's process settings.")
  for name in [*build.process_fields(config), "data.image_size"]:
    mine, theirs = load.value(config, name), load.value(clf, name)
    if mine != theirs:
      raise ValueError(f"{where} was trained with {name}={theirs!r}, this model has "
                       f"{mine!r}: train a classifier on this model's process and image size.")
  classes = build.num_classes(config)
  if classes is not None and clf.data.num_classes != classes:
    raise ValueError(f"{where} has {clf.data.num_classes} classes, this class-conditional "
                     f"model {classes}: its labels must be the model's; train a classifier on "
                     f"the same labels.")
  module = build.model(clf, shape[-1])
  template = build.train_state(clf, module, shape, abstract=True)
  return Classifier(clf, module, template,
                    os.path.join(files.resolve(s.classifier_workdir), "checkpoints"),
                    int(clf.data.num_classes))


"""Classifier guidance and editing through the command line: a classifier's run, guided
sampling and --mode edit with it, and the gate's refusals of classifiers and edits that do not
fit the model (one line, exit 2, nothing written)."""

import json

import numpy as np
import pytest
from conftest import run_cli

from ddpm_jax.configs import digits_classifier
from ddpm_jax.data import sources

DEMO = "--config=configs/demo.py"
CLASSIFIER = "--config=configs/digits_classifier.py"
GUIDED = ["--mode=sample", "--config.sampling.classifier_scale=2.0"]


def _classifier_dir(tmp_path, **changes):
  """A workdir holding a classifier run's config.json (what the gate reads), changed."""
  config = digits_classifier.get_config()
  for name, value in changes.items():
    section, leaf = name.split("__")
    config[section][leaf] = value
  path = tmp_path / f"classifier_{len(list(tmp_path.iterdir()))}"
  path.mkdir()
  (path / "config.json").write_text(config.to_json_best_effort())
  return path


def _edit_inputs(tmp_path, n=4, mask_shape=None):
  images, labels = sources.load_embedded_digits()
  np.savez(tmp_path / "inputs.npz", images=images[:n], labels=labels[:n])
  if mask_shape is not None:
    np.savez(tmp_path / "mask.npz", mask=np.ones(mask_shape, np.float32))
  return tmp_path / "inputs.npz"


CASES = [
    ("scale_without_classifier", [], "needs a classifier: set sampling.classifier_workdir"),
    ("no_config_json", ["WORKDIR_EMPTY"], "has no config.json"),
    ("not_a_classifier", ["WORKDIR_MODEL"], "is a training.objective 'ddpm' run, not a classifier"),
    ("other_process", [{"classifier__process": "dsm"}], "classifies the process of objective 'dsm'"),
    ("other_schedule", [{"diffusion__beta_end": 0.03}], "trained with diffusion.beta_end=0.03"),
    ("other_schedule_name", [{"diffusion__beta_schedule": "cosine"}],
     "diffusion.beta_schedule='cosine'"),
    ("other_image_size", [{"data__image_size": 16}], "trained with data.image_size=16"),
    ("other_classes", [{"data__num_classes": 5}, "--config.model.conditional=True"],
     "has 5 classes, this class-conditional model 10"),
]


@pytest.mark.parametrize("case_id,setup,expected", CASES, ids=[c[0] for c in CASES])
def test_the_gate_refuses_a_classifier_that_does_not_fit(case_id, setup, expected, tmp_path,
                                                         capsys, monkeypatch):
  args = []
  for item in setup:
    if item == "WORKDIR_EMPTY":
      (tmp_path / "empty").mkdir()
      args.append(f"--config.sampling.classifier_workdir={tmp_path / 'empty'}")
    elif item == "WORKDIR_MODEL":
      model = _classifier_dir(tmp_path, training__objective="ddpm", model__name="ddpm")
      args.append(f"--config.sampling.classifier_workdir={model}")
    elif isinstance(item, dict):
      args.append(f"--config.sampling.classifier_workdir={_classifier_dir(tmp_path, **item)}")
    else:
      args.append(item)
  fresh = tmp_path / "run"
  code, err = run_cli([DEMO, *GUIDED, *args, f"--workdir={fresh}"], capsys, monkeypatch)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and expected in lines[0], err
  assert not fresh.exists()


EDIT_CASES = [
    ("classifier_run_sampled", [CLASSIFIER, "--mode=sample"], "is trained (--mode train), not used"),
    ("half_unet_as_a_model", [DEMO, "--config.model.name=half_unet"],
     "trains model.name 'half_unet' and only it"),
    ("conditional_classifier", [CLASSIFIER, "--config.model.conditional=True"],
     "A classifier predicts the labels"),
    ("workdir_without_scale", [DEMO, "--mode=sample", "--config.sampling.classifier_workdir=x"],
     "is read only by sampling.classifier_scale > 0"),
    ("classifier_scale_in_train", [DEMO, "--config.sampling.classifier_scale=1.0"],
     "is read only by --mode sample, eval and edit"),
    ("edit_without_input", [DEMO, "--mode=edit"], "--mode edit needs images: set edit.input"),
    ("edit_t_start_zero", [DEMO, "--mode=edit", "--config.edit.t_start=0.0"],
     "edit.t_start=0.0 must be in (0, 1]"),
    ("edit_input_missing", [DEMO, "--mode=edit", "--config.edit.input=/nonexistent.npz"],
     "No .npz file at '/nonexistent.npz'"),
    ("edit_mask_shape", [DEMO, "--mode=edit", "INPUTS", "MASK"], "edit.mask"),
    ("edit_in_sample", [DEMO, "--mode=sample", "--config.edit.t_start=0.3"],
     "is read only by --mode edit"),
]


@pytest.mark.parametrize("case_id,args,expected", EDIT_CASES, ids=[c[0] for c in EDIT_CASES])
def test_the_gate_refuses_bad_classifier_runs_and_edits(case_id, args, expected, tmp_path,
                                                        capsys, monkeypatch):
  inputs = _edit_inputs(tmp_path, mask_shape=(5, 5))
  args = [{"INPUTS": f"--config.edit.input={inputs}",
           "MASK": f"--config.edit.mask={tmp_path / 'mask.npz'}"}.get(a, a) for a in args]
  fresh = tmp_path / "run"
  code, err = run_cli([*args, f"--workdir={fresh}"], capsys, monkeypatch)
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and expected in lines[0], err
  assert not fresh.exists()


@pytest.mark.slow
def test_a_classifier_trains_and_guides_sampling_and_editing(tmp_path, capsys, monkeypatch):
  """The classifier's run writes accuracy per noise quarter and resumes; the demo model
  guided by it samples and edits."""
  tiny = ["--config.training.batch_size=16", "--config.training.log_every=5",
          "--config.model.ch_mult=(1,)"]
  clf = tmp_path / "classifier"
  code, err = run_cli([CLASSIFIER, *tiny, "--config.training.num_train_steps=10",
                       "--config.training.checkpoint_every=10", f"--workdir={clf}"],
                      capsys, monkeypatch)
  assert code == 0, err
  rows = [json.loads(line) for line in (clf / "metrics.jsonl").read_text().splitlines()]
  assert {"accuracy", "accuracy_noise_q1", "accuracy_noise_q4", "loss"} <= set(rows[-1])
  assert not (clf / "samples").exists()  # a classifier does not sample
  code, err = run_cli([CLASSIFIER, *tiny, "--config.training.num_train_steps=15",
                       "--config.training.checkpoint_every=5", f"--workdir={clf}"],
                      capsys, monkeypatch)
  assert code == 0, err
  steps = [json.loads(line)["step"] for line in (clf / "metrics.jsonl").read_text().splitlines()]
  assert steps == [5, 10, 15]  # resumed at 10

  model = tmp_path / "model"
  code, err = run_cli([DEMO, *tiny, "--config.training.num_train_steps=5",
                       "--config.training.checkpoint_every=5", f"--workdir={model}"],
                      capsys, monkeypatch)
  assert code == 0, err
  guide = [f"--config.sampling.classifier_workdir={clf}", "--config.sampling.classifier_scale=2",
           "--config.model.ch_mult=(1,)", "--config.sampling.num_steps=3"]
  code, err = run_cli([DEMO, "--mode=sample", *guide, "--config.sampling.num_samples=8",
                       "--config.sampling.batch_size=8", f"--workdir={model}"], capsys,
                      monkeypatch)
  assert code == 0, err
  assert list((model / "samples").glob("ddim3_eta0_cg2_*.npz"))

  inputs = _edit_inputs(tmp_path, n=8, mask_shape=(8, 8))
  code, err = run_cli([DEMO, "--mode=edit", *guide, f"--config.edit.input={inputs}",
                       f"--config.edit.mask={tmp_path / 'mask.npz'}",
                       "--config.sampling.batch_size=8", f"--workdir={model}"], capsys,
                      monkeypatch)
  assert code == 0, err
  (npz,) = (model / "edits").glob("*.npz")
  with np.load(npz) as z:
    # an all-ones mask keeps every pixel: the edit is its input
    np.testing.assert_array_equal(z["images"], z["inputs"])
    assert z["images"].shape == (8, 8, 8, 1)

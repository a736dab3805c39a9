"""The README and docs/ cannot go stale: the README's quickstart runs as a user runs it (on
tiny settings), the docs' sampler table is the one samplers/table.py renders, their Python
examples run, and every file they name exists."""

import os
import pathlib
import re

import numpy as np
import pytest

from ddpm_jax.config import fields
from ddpm_jax.samplers import table

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}


def _python_blocks(text: str) -> list[str]:
  return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_readme_is_short():
  assert len(README.splitlines()) <= 150


def test_the_sampler_table_is_the_one_the_code_renders():
  block = re.search(r"<!-- samplers:.*?-->\n(.*?)\n<!-- end samplers -->", DOCS["samplers.md"],
                    re.S)
  assert block, "docs/samplers.md lost its generated sampler table"
  assert block.group(1) == table.markdown(), (
      "docs/samplers.md's sampler table is stale: paste ddpm_jax.samplers.table.markdown() "
      "between its markers")


def test_the_config_reference_is_the_one_the_declarations_render():
  assert DOCS["config.md"] == fields.markdown(), (
      "docs/config.md is stale: write ddpm_jax.config.fields.markdown() to it")


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written(tmp_path, monkeypatch):
  """The README's Python, in order in one namespace from a fresh directory, with 2 training
  steps instead of 1000: it trains, samples two ways (50 and 11 evaluations), saves a
  1-channel diffusers folder and loads it back; the own-network example reaches its data's
  mean and std."""
  monkeypatch.chdir(tmp_path)
  namespace = {}
  blocks = _python_blocks(README)
  assert "range(1000)" in blocks[0]
  for code in [blocks[0].replace("range(1000)", "range(2)"), *blocks[1:]]:
    exec(compile(code, "README.md", "exec"), namespace)
  assert np.asarray(namespace["images"]).shape == (64, 8, 8, 1)
  assert namespace["again"].channels == 1 and (tmp_path / "demo_unet" / "unet").is_dir()
  assert namespace["nfe"] == 21  # the last call: DPM-Solver++ with 20 steps
  x = np.asarray(namespace["x"])
  np.testing.assert_allclose([x.mean(), x.std()], [0.5, 0.2], atol=0.01)


def test_the_docs_python_examples_run_and_sample_the_gaussian():
  """docs/python.md's lower-level examples: DDIM-50 and DPM-Solver++ (10 NFE) samples of
  N((0.5, −0.3), diag(0.3, 0.2)²), whose means they must reach (DDIM's η = 0 sampler at 50
  steps shrinks the std by ~10%; DPM-Solver++ at 10 NFE measured 2–4%, 1% Monte Carlo)."""
  namespace = {}
  for code in _python_blocks(DOCS["python.md"]):
    exec(compile(code, "docs/python.md", "exec"), namespace)
  for name in ("x", "y", "x1"):
    x = np.asarray(namespace[name])
    np.testing.assert_allclose(x.mean(0), [0.5, -0.3], atol=0.02, err_msg=name)
  np.testing.assert_allclose(np.asarray(namespace["y"]).std(0), [0.3, 0.2], rtol=0.06)
  assert namespace["latents"].shape == (4096, 2)


@pytest.mark.parametrize("name", ["README.md", *(f"docs/{d}" for d in DOCS)])
def test_every_file_and_page_named_exists(name):
  """Paths (ddpm_jax/…, tests/…) exist as written; bare `name.py` names (configs, modules in
  tables) exist somewhere in the project; relative links point at files."""
  text = (ROOT / name).read_text()
  here = (ROOT / name).parent
  paths = set(re.findall(r"(?<![\w/.~])(?:ddpm_jax|tests|benchmarks|configs|launch|docs)/"
                         r"[\w/]+\.\w+", text))
  missing = sorted(p for p in paths if not (ROOT / p).exists())
  modules = {p.name for d in ("ddpm_jax", "benchmarks", "tests", "launch")
             for p in (ROOT / d).rglob("*.py")}
  missing += sorted(n for n in set(re.findall(r"`(\w+\.py)`", text)) if n not in modules)
  links = re.findall(r"\]\(([^)#:]+)(?:#[\w-]+)?\)", text)
  missing += sorted(link for link in links if not os.path.exists(here / link))
  assert not missing, f"{name} names files that are not here: {missing}"

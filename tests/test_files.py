import json

import numpy as np
import pytest

from ddpm_jax.infra import files


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
  path = str(tmp_path / "r.json")
  files.save_json(path, {"fid": 1.5})
  with pytest.raises(TypeError):
    files.save_json(path, {"fid": object()})  # fails while serializing, half-way through
  assert json.load(open(path)) == {"fid": 1.5}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
  npz = files.save_npz(str(tmp_path / "a.npz"), compressed=True, x=np.arange(3))
  with np.load(npz, allow_pickle=False) as z:
    assert z["x"].tolist() == [0, 1, 2]
  assert files.load_npz(npz)["x"].tolist() == [0, 1, 2]
  # A write that fails inside the block leaves neither a file nor a temporary behind.
  with pytest.raises(RuntimeError), files.atomic_open(str(tmp_path / "sub" / "b.bin")) as f:
    f.write(b"half")
    raise RuntimeError
  assert list((tmp_path / "sub").iterdir()) == []


def test_paths_resolve_locally_and_pass_uris_through(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert files.resolve("w") == str(tmp_path / "w")
  assert files.resolve("gs://bucket/runs/a") == "gs://bucket/runs/a"

import json

import numpy as np
import pytest

from ddpm_jax import files


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

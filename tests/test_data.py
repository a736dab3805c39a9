"""Data sources and the deterministic, resumable batch order."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ddpm_jax.data import batches, sources


def test_batches_are_a_function_of_seed_and_step():
  src = sources.ArraySource(np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1).repeat(4, 1).repeat(4, 2))
  kw = dict(global_batch=10, image_size=4, seed=3)
  a, b = batches.get_batch(src, 7, **kw), batches.get_batch(src, 7, **kw)
  np.testing.assert_array_equal(a["image"], b["image"])
  # One epoch (5 steps) visits every example once; the next epoch is another order.
  seen = np.concatenate([batches.batch_indices(50, 10, s, 3) for s in range(5)])
  assert sorted(seen) == list(range(50))
  assert not np.array_equal(batches.batch_indices(50, 10, 0, 3), batches.batch_indices(50, 10, 5, 3))
  # Hosts read disjoint slices whose union is the global batch.
  parts = [batches.get_batch(src, 7, process_index=i, process_count=2, **kw)["image"] for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(parts), a["image"])
  it = batches.iterate_batches(src, 7, **kw)
  np.testing.assert_array_equal(next(it)["image"], a["image"])
  np.testing.assert_array_equal(next(it)["image"], batches.get_batch(src, 8, **kw)["image"])
  stacked = next(batches.iterate_batches(src, 6, steps_per_item=3, **kw))  # steps_per_dispatch
  for i in range(3):
    np.testing.assert_array_equal(stacked["image"][i], batches.get_batch(src, 6 + i, **kw)["image"])


class PerImageSource:
  """A source read image by image, as tfds is (a list of arrays per batch)."""

  def __init__(self, images, labels):
    self.images, self.labels = images, labels

  def __len__(self):
    return len(self.images)

  def get(self, indices):
    return [self.images[i] for i in indices], self.labels[indices]


def test_worker_processes_deliver_the_batches_of_seed_and_step_in_order():
  images, labels = sources.load_embedded_digits()
  src = PerImageSource(images, labels)
  kw = dict(global_batch=32, image_size=16, seed=1, random_flip=True)
  it = batches.iterate_batches(src, 5, num_workers=2, **kw)
  try:
    for step in range(5, 10):
      got = next(it)
      want = batches.get_batch(src, step, **kw)
      np.testing.assert_array_equal(got["image"], want["image"])
      np.testing.assert_array_equal(got["label"], want["label"])
  finally:
    it.close()


def test_the_vectorized_batch_equals_preprocessing_each_image():
  """In-memory images are resized once (`at_size`); a batch is then a gather and flip. Both
  must equal cropping, resizing and flipping each image on its own."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 10, 12, 3), dtype=np.uint8)
  src = sources.ArraySource(images, np.arange(40, dtype=np.int32))
  fast = sources.at_size(src, 8)
  assert fast.images.shape == (40, 8, 8, 3) and sources.at_size(fast, 8) is fast
  kw = dict(global_batch=16, image_size=8, seed=2, random_flip=True)
  for step in range(3):
    got = batches.get_batch(fast, step, **kw)
    want = batches.get_batch(PerImageSource(images, src.labels), step, **kw)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_preprocess_crop_resize_flip_scale():
  img = np.zeros((6, 10, 3), np.uint8)
  img[:, :5] = 255  # left half white: the center crop keeps columns 2..7
  out = batches.preprocess([img], 6, np.array([False]))
  assert out.shape == (1, 6, 6, 3) and out.min() == -1.0 and out.max() == 1.0
  np.testing.assert_array_equal(out[0, :, :3], 1.0)
  np.testing.assert_array_equal(batches.preprocess([img], 6, np.array([True]))[0], out[0, :, ::-1])
  small = batches.preprocess([np.full((28, 28, 1), 255, np.uint8)], 8, np.array([False]))
  assert small.shape == (1, 8, 8, 1) and np.allclose(small, 1.0)


def test_npz_and_folder_sources(tmp_path):
  imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
  np.savez(tmp_path / "d.npz", images=imgs, labels=np.arange(5))
  src = sources.open_source("npz", path=str(tmp_path / "d.npz"))
  got, labels = src.get(np.array([3, 1]))
  np.testing.assert_array_equal(got, imgs[[3, 1]])
  assert labels.tolist() == [3, 1]
  np.savez(tmp_path / "d_test.npz", images=imgs[:2])
  per_split = str(tmp_path / "d_{split}.npz")
  assert len(sources.open_source("npz", "test", path=per_split)) == 2
  with pytest.raises(FileNotFoundError, match="d_train.npz"):
    sources.open_source("npz", "train", path=per_split)
  for cls in ("cat", "dog"):
    (tmp_path / "f" / cls).mkdir(parents=True)
  Image.fromarray(imgs[0]).save(tmp_path / "f" / "cat" / "a.png")
  Image.fromarray(imgs[1]).save(tmp_path / "f" / "dog" / "b.png")
  src = sources.open_source("folder", path=str(tmp_path / "f"))
  got, labels = src.get(np.array([0, 1]))
  np.testing.assert_array_equal(np.stack(got), imgs[:2])
  assert labels.tolist() == [0, 1]


def test_bad_sources_give_one_line_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="set data.path"):
    sources.open_source("npz", path=str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "x.npz", pixels=np.zeros((2, 2, 2), np.uint8))
  with pytest.raises(ValueError, match="under the key 'images'"):
    sources.open_source("npz", path=str(tmp_path / "x.npz"))
  with pytest.raises(FileNotFoundError, match="array_record") as e:
    sources.open_source("mnist", data_dir=str(tmp_path))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="lower training.batch_size"):
    batches.batch_indices(10, 16, 0, 0)


def test_tfds_mock_source_has_images_and_labels():
  with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
    src = sources.open_source("mnist")
    batch = batches.get_batch(src, 0, global_batch=8, image_size=8, seed=0)
  assert batch["image"].shape == (8, 8, 8, 1) and batch["label"].dtype == np.int32
  assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0


SHARED = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "tfds_array_record"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/tfds_array_record (real Fashion-MNIST) is absent")
def test_real_fashion_mnist_through_data_source():
  src = sources.open_source("fashion_mnist", "test", str(SHARED))
  assert len(src) == 10_000
  batch = batches.get_batch(src, 0, global_batch=32, image_size=32, seed=0, random_flip=True)
  assert batch["image"].shape == (32, 32, 32, 1) and set(batch["label"]) <= set(range(10))
  # Real clothing images: dark background, bright objects.
  assert (batch["image"] < -0.9).mean() > 0.3 and batch["image"].max() > 0.9


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/tfds_array_record (real Fashion-MNIST) is absent")
def test_two_processes_with_grain_workers_resume_the_batches_of_a_straight_run():
  """Multi-host exact resume of the data: each of 2 processes, resumed at step N (here across
  an epoch boundary, 3,750 steps of 16), reads its half of every global batch through 2 grain
  worker processes from the tfds source, and gets what it read in a straight run: its half of
  the global batch of seed and step (each process's slice of the straight run: the first test
  of this file)."""
  src = sources.open_source("fashion_mnist", "train", str(SHARED))
  kw = dict(global_batch=16, image_size=16, seed=5, random_flip=True)
  resume, last = 3749, 3752
  assert len(src) // 16 == 3750  # epoch 1 starts at step 3750
  for process in range(2):
    it = batches.iterate_batches(src, resume, num_workers=2, process_index=process,
                                 process_count=2, **kw)
    try:
      for step in range(resume, last):
        got, whole = next(it), batches.get_batch(src, step, **kw)
        half = slice(8 * process, 8 * (process + 1))
        np.testing.assert_array_equal(got["image"], whole["image"][half])
        np.testing.assert_array_equal(got["label"], whole["label"][half])
    finally:
      it.close()


def _one_image_folder(tmp_path, image, name="a.png", **save):
  folder = tmp_path / name.split(".")[0]
  folder.mkdir()
  image.save(folder / name, **save)
  return folder


def test_image_modes_are_read_as_they_are(tmp_path):
  """16-bit scaled from 65535 (not clipped at 255), palette through its colours, bilevel,
  opaque RGBA and grayscale+alpha without the alpha, CMYK (JPEG) by its conversion: pixel
  values checked against what each image holds."""
  ramp16 = np.array([[0, 257, 32896, 65535]] * 4, np.uint16)
  cases = {"i16": (Image.fromarray(ramp16), "a.png", np.array([0, 1, 128, 255]))}
  palette = Image.new("P", (4, 4))
  palette.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
  palette.putdata([1, 0, 1, 0] * 4)
  rgba = Image.fromarray(np.full((4, 4, 4), [90, 60, 30, 255], np.uint8), "RGBA")
  gray_alpha = Image.fromarray(np.full((4, 4, 2), [77, 255], np.uint8), "LA")
  bilevel = Image.fromarray(np.array([[0, 1, 0, 1]] * 4, bool))
  cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
  cmyk.paste((0, 0, 0, 255), (0, 0, 8, 16))  # left half black, right half white
  for name, (image, file, row) in {**cases, "palette": (palette, "a.png", None),
                                   "rgba": (rgba, "a.png", None), "la": (gray_alpha, "a.png", None),
                                   "bilevel": (bilevel, "a.png", None),
                                   "cmyk": (cmyk, "a.jpg", None)}.items():
    src = sources.load_folder(str(_one_image_folder(tmp_path, image, file.replace("a", name))))
    pixels = src.images[0].astype(int)
    assert src.images.dtype == np.uint8 and pixels.shape[-1] == 3, name
    if name == "i16":
      np.testing.assert_array_equal(pixels[0, :, 0], row)
      assert (pixels == pixels[..., :1]).all()  # gray in every channel
    elif name == "palette":
      np.testing.assert_array_equal(pixels[0, :2], [[200, 10, 30], [0, 0, 0]])
    elif name == "rgba":
      assert (pixels == [90, 60, 30]).all()
    elif name == "la":
      assert (pixels == 77).all()
    elif name == "bilevel":
      np.testing.assert_array_equal(pixels[0, :, 0], [0, 255, 0, 255])
    else:
      assert pixels[:, :6].max() < 20 and pixels[:, 10:].min() > 235, pixels[..., 0]


def test_transparent_and_unreadable_modes_are_refused_naming_the_file(tmp_path):
  see_through = np.full((4, 4, 4), 255, np.uint8)
  see_through[0, 0, 3] = 0
  folder = _one_image_folder(tmp_path, Image.fromarray(see_through, "RGBA"), "clear.png")
  with pytest.raises(ValueError, match=r"clear.png has transparent pixels \(RGBA\); flatten"):
    sources.load_folder(str(folder))
  with pytest.raises(ValueError, match=r"f.tif is in PIL mode 'F', which is not read"):
    sources._to_rgb(Image.new("F", (4, 4)), "f.tif")  # no extension read here makes one


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
  """A 1×1 PNG whose header claims 50000×50000 pixels: one line naming it, no PIL error."""
  import struct
  import zlib
  folder = _one_image_folder(tmp_path, Image.new("RGB", (1, 1)), "bomb.png")
  path = folder / "bomb.png"
  data = bytearray(path.read_bytes())
  header = b"IHDR" + struct.pack(">II", 50_000, 50_000) + bytes(data[24:29])
  data[12:29] = header
  data[29:33] = struct.pack(">I", zlib.crc32(header))
  path.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=r"bomb.png claims more than \d+ pixels.*remove it"):
    sources.load_folder(str(folder))

"""Data: random-access sources (embedded digits, .npz, image folders, tfds) and batches."""

"""The TrainState and the data-parallel training step; orbax checkpoints with checksums."""

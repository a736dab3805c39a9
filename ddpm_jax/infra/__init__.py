"""Infrastructure: devices and data parallelism, files (atomic, epath), images, the metrics
writer, FLOP counting."""

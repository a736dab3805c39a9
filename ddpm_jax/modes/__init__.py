"""The command line's modes, one module each (train, sample, bpd, evaluate), and runs.py: the
start-up they share (the config gate, the workdir, restoring parameters, result names)."""

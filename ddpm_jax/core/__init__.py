"""Pure math, no config, files or devices: schedules, the discrete chain, the SDEs, the
Denoiser (one adapter per objective) and the broadcasting helper."""

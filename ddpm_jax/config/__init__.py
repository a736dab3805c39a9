"""The only code that reads a ConfigDict: schema (ranges, choices, relations, what a run
reads), validate (the gate: schema + a dry build, before any side effect), build (config ->
process, network, Denoiser, loss, step, optimizer, data) and sampler (config.sampling -> the
compiled sampler)."""

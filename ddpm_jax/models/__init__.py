"""Networks. They know nothing of schedules or configs: keyword arguments in,
(x, t[, y]) -> output."""

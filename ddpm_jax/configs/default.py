"""The defaults every config starts from (docs/config.md: every field, with
what it does), as a config file.

  python -m ddpm_jax.main --config configs/default.py --workdir /tmp/ddpm_default
"""

from ddpm_jax.config.defaults import get_config  # noqa: F401

"""Defaults every config starts from: the DDPM CIFAR-10 recipe's choices, on the embedded
digits, assembled from the field declarations (config/fields.py: each field's default, help
and check, declared once; docs/config.md lists them). The config files (ddpm_jax/configs/)
start from these and override fields; so do the weight imports (interop/), which need no
config file.
"""

import ml_collections

from ddpm_jax.config import fields


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  for f in fields.FIELDS:
    *sections, leaf = f.name.split(".")
    node = config
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    node[leaf] = f.default
  return config

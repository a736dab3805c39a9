"""FID as the papers measured it: each preset names the sample count, the reference split, the
resize to 299 (evaluation/inception.py RESIZES) and how many seeds were run and reported. The
Inception weights are the same in all (the TF graph 2015-12-05); `--mode eval` writes the
preset into the result's JSON with the number.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Protocol:
  num_samples: int   # samples per seed
  ref_split: str     # every image of it is the reference
  resize: str        # inception.RESIZES
  num_seeds: int     # seeds run; the FID reported is the lowest (EDM) or the only one
  tool: str          # who measured it this way


PROTOCOLS = {
    "ddpm": Protocol(50_000, "train", "tf1_bilinear", 1,
                     "Ho et al. 2020 (FID 3.17, IS 9.46): TF-GAN, 50,000 samples against the "
                     "training set, TF1 bilinear resize"),
    "score_sde": Protocol(50_000, "train", "tf1_bilinear", 1,
                          "Song et al. 2021: TF-GAN with its cifar10_stats.npz (pool_3 of the "
                          "training set), 50,000 samples, TF1 bilinear resize"),
    "edm": Protocol(50_000, "train", "bilinear", 3,
                    "Karras et al. 2022: 50,000 samples against the training set, the lowest "
                    "of 3 seeds, StyleGAN3's Inception (PyTorch bilinear resize)"),
    "pytorch_fid": Protocol(50_000, "train", "bilinear", 1,
                            "pytorch-fid: F.interpolate bilinear (align_corners=False)"),
    "clean_fid": Protocol(50_000, "train", "clean_bicubic", 1,
                          "clean-fid (Parmar et al. 2022): PIL bicubic in float32"),
}
NAMES = ("",) + tuple(PROTOCOLS)  # "": the config's own fid.* settings

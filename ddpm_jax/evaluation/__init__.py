"""Sample-quality evaluation: the FID Inception network and the metrics on its features."""

"""Weights in and out: published state dicts ↔ this library's parameter trees, by name."""

"""Samplers: each takes a model callable, a Schedule (or SDE), a key and a shape."""

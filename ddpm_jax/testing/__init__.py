"""Exact models for tests and checks: data whose noised marginals are known in closed form."""

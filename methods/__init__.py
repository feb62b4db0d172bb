"""Pruning methods: one file per method, a registry, and the shared mask-selection code."""

"""Experiments built on the trainer: sweeps of runs and the report of their results."""

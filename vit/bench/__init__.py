"""Benchmark the checkpoints on this CPU: `python -m vit.bench --help`; what is measured, and
how, is the docstring of vit/bench/cli.py (the command's help)."""

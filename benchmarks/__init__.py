"""Benchmarks (installed as ``hyena_hf.benchmarks``; ``hyena-hf bench NAME`` runs them)."""

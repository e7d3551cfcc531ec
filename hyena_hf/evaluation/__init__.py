"""Evaluation helpers: lm-evaluation-harness integration, offline SuperGLUE data, metrics."""

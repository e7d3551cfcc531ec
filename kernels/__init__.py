"""Triton kernels for the long convolution (installed as ``hyena_hf.kernels``)."""

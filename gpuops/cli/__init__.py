"""Thin command-line skin over the gpuops library."""

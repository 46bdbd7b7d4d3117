"""Conditioning features built from selected physics objects (one module per analysis)."""

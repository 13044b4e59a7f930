"""Procedural media with known distortions, so every track has a demo dataset and tests need no download."""

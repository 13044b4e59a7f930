"""Frozen feature extraction: backbones that turn view images into vectors for the feature cache."""

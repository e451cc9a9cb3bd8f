"""Data set builder and training scripts for the bundled emoji model family."""

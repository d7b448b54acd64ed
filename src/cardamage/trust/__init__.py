"""Knowing when not to answer: photo quality, likeness to the training photos, calibration."""

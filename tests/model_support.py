"""Checks of trained runs' fold models, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def assert_fold_models_score_as_cached(
    run: Path, image_root: Path, told_apart: bool = True
) -> None:
    """Every fold's shipped model, scoring its validation photos from their pixels, gives the
    scores the run computed (from cached features, or after fine-tuning from the photos): what
    was scored out of fold is what the fold's model computes. ``told_apart``: the photos' scores
    differ (not so for a random backbone fine-tuned briefly, whose activations fade)."""
    import json

    from cardamage.model.multitask import ModelBundle
    from cardamage.train.folds import predict_images

    for fold in json.loads((run / "folds.json").read_text()):
        fold_dir = run / "folds" / f"fold_{fold['fold']}"
        cached = np.load(fold_dir / "scores.npz")
        model = ModelBundle.load(fold_dir / "model").model
        scored = predict_images(model, [image_root / image for image in fold["validation"]], 8)
        for name, value in scored.items():
            np.testing.assert_allclose(value, cached[name], atol=1e-5)
        if told_apart:
            assert scored["severity"].std(axis=0).max() > 1e-4  # the photos are told apart

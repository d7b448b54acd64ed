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


def savedmodel_scores(run: Path, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The run's model exported as a SavedModel, loaded in TensorFlow, scoring ``pixels``."""
    import tensorflow as tf

    from cardamage.inference.export import export_model

    loaded = tf.saved_model.load(str(export_model(run, "savedmodel")))  # kept while it serves
    return {name: np.asarray(value) for name, value in loaded.serve(pixels).items()}


def tflite_scores(run: Path, pixels: np.ndarray, int8: bool = False) -> dict[str, np.ndarray]:
    """The run's model exported to TFLite (``int8``: quantised), run by the interpreter."""
    import tensorflow as tf

    from cardamage.inference.export import export_model

    interpreter = tf.lite.Interpreter(model_path=str(export_model(run, "tflite", int8=int8)))
    runner = interpreter.get_signature_runner()
    return runner(**{next(iter(runner.get_input_details())): pixels})


def tiny_fine_tuning(labels: Path, out: Path, **options):
    """The train config of a tiny fine-tuning run (MobileNet 0.25 at 32 px, random weights,
    two epochs) on ``labels``, writing under ``out``; ``options`` by flag name on top."""
    from cardamage.config import load_train_config

    tiny = {
        "data": labels,
        "out": out / "run",
        "cache_dir": out / "cache",
        "backbone": "mobilenet",
        "alpha": 0.25,
        "weights": "none",
        "image_size": 32,
        "head_units": 8,
        "fine_tune_epochs": 2,
    }
    return load_train_config(None, tiny | options)

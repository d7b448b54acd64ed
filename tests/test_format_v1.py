"""The model object: saved and loaded by keras.saving with its tasks, and models saved in the
format before it (a plain functional model, tests/fixtures/model_v1) still load and score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardamage.model.multitask import ModelBundle, MultiTaskClassifier

FIXTURE = Path(__file__).parent / "fixtures" / "model_v1"


def test_a_model_saved_before_the_model_classes_loads_and_scores_the_same() -> None:
    bundle = ModelBundle.load(FIXTURE)
    assert isinstance(bundle.model, MultiTaskClassifier)
    assert list(bundle.model.heads) == ["severity", "damage_type"]
    saved = np.load(FIXTURE / "scores.npz")
    scores = bundle.model.predict(saved["pixels"], verbose=0)
    for name in ("severity", "damage_type"):  # 1e-4: another CPU's kernels differ by 2e-5
        np.testing.assert_allclose(scores[name], saved[name], atol=1e-4)


def test_the_classifier_saves_and_loads_as_itself(tmp_path: Path) -> None:
    bundle = ModelBundle.load(FIXTURE)
    bundle.save(tmp_path)
    again = ModelBundle.load(tmp_path)
    assert type(again.model) is MultiTaskClassifier
    assert [t.name for t in again.model.tasks] == ["severity", "damage_type"]
    assert again.model.backbone.mid_level and again.model.standardizers
    pixels = np.load(FIXTURE / "scores.npz")["pixels"]
    expected = bundle.model.predict(pixels, verbose=0)
    for name, value in again.model.predict(pixels, verbose=0).items():
        np.testing.assert_array_equal(value, expected[name])

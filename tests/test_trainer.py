"""The heads trainer compiles once per run: a reused model must train exactly like a fresh one."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cardamage.config import load_train_config
from cardamage.data.pipeline import feature_batches
from cardamage.model.multitask import build_heads
from cardamage.train.trainer import FoldData, HeadTrainer

DIM, N = 16, 60


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("heads")
    cfg = load_train_config(
        None, {"data": tmp / "labels.csv", "out": tmp / "run", "epochs": 4, "patience": 2}
    )
    tasks = cfg.build_tasks()
    rng = np.random.default_rng(0)
    targets = {
        t.name: (
            np.eye(len(t.labels), dtype=np.float32)[rng.integers(0, len(t.labels), N)]
            if t.multiclass
            else rng.integers(0, 2, (N, len(t.labels))).astype(np.float32)
        )
        for t in tasks
    }
    features = rng.normal(size=(2, N, DIM)).astype(np.float32)
    return cfg, tasks, FoldData(features, targets, [], np.arange(N), np.arange(0))


def _fold(setting: tuple, trainer: HeadTrainer, seed: int, log_dir: Path) -> tuple:
    """One fold the way crossval runs it: fresh heads from the fold's seed (two heads models,
    as the per-task layout has), trained, then the validation images scored."""
    _, tasks, data = setting
    val = np.arange(seed * 10, seed * 10 + 15)
    fold = FoldData(data.features, data.targets, [], np.setdiff1d(np.arange(N), val), val)
    keras.utils.set_random_seed(seed)
    heads = [build_heads(DIM, group, 8, 0.3) for group in (tasks[:1], tasks[1:])]
    history, best = trainer.fit(heads, fold, log_dir)
    weights = [w for head in heads for w in head.get_weights()]
    return history, best, weights, trainer.predict(fold.features[0, val]), heads


def test_reused_heads_train_like_fresh_ones(setting: tuple, tmp_path: Path) -> None:
    cfg, tasks, _ = setting
    shared = HeadTrainer(tasks, cfg)
    for seed in (1, 2):
        reused = _fold(setting, shared, seed, tmp_path / f"reused{seed}")
        fresh = _fold(setting, HeadTrainer(tasks, cfg), seed, tmp_path / f"fresh{seed}")
        assert reused[:2] == fresh[:2]  # histories and best epochs
        for a, b in zip(reused[2], fresh[2], strict=True):
            np.testing.assert_array_equal(a, b)  # the fold's own heads got the trained weights
        assert reused[3].keys() == {t.name for t in tasks}
        for name, scores in reused[3].items():
            np.testing.assert_array_equal(scores, fresh[3][name])


def test_scores_are_those_of_the_folds_heads(setting: tuple, tmp_path: Path) -> None:
    """Scored by a direct call on the kept models, as Keras' predict on the fold's heads would."""
    cfg, tasks, data = setting
    trainer = HeadTrainer(tasks, cfg)
    _fold(setting, trainer, 1, tmp_path / "first")
    *_, scores, heads = _fold(setting, trainer, 2, tmp_path / "second")
    x = data.features[0, 20:35]  # the second fold's validation images
    expected = {k: v for head in heads for k, v in head.predict(x, verbose=0).items()}
    for name, value in scores.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-6)


def test_every_epoch_sees_the_rows_in_a_new_order() -> None:
    """Within one iterator and across new ones (Keras may start one per epoch)."""
    x = np.arange(40, dtype=np.float32)[:, None]
    ds = feature_batches(x, {"t": x}, {"t": np.ones(40, np.float32)}, 8, seed=3)

    def rows(batches) -> np.ndarray:
        return np.concatenate([features.numpy().ravel() for features, _, _ in batches])

    first_two = rows(ds.take(10))
    again = rows(ds.take(5))
    for epoch in (first_two[:40], first_two[40:], again):
        assert sorted(epoch) == list(range(40))  # every row once an epoch
    assert not np.array_equal(first_two[:40], first_two[40:])
    assert not np.array_equal(first_two[:40], again)


def test_standardized_heads_adapt_to_each_folds_training_features(
    setting: tuple, tmp_path: Path
) -> None:
    """Mean and variance of the training rows of every view, not of the validation rows, and
    anew in every fold with the kept (compiled) model."""
    cfg, tasks, data = setting
    shifted = data.features * 3.0 + 5.0  # features far from zero mean, unit variance
    trainer = HeadTrainer(tasks, cfg)
    for val in (np.arange(0, 15), np.arange(30, 45)):
        train = np.setdiff1d(np.arange(N), val)
        head = build_heads(DIM, tasks, 0, 0.0, standardize=True)
        trainer.fit([head], FoldData(shifted, data.targets, [], train, val), tmp_path)
        rows = shifted[:, train].reshape(-1, DIM)
        norm = head.standardizer
        np.testing.assert_allclose(np.ravel(norm.mean), rows.mean(axis=0), rtol=1e-4)
        np.testing.assert_allclose(np.ravel(norm.variance), rows.var(axis=0), rtol=1e-3)


def test_head_l2_shrinks_the_trained_weights(setting: tuple, tmp_path: Path) -> None:
    cfg, tasks, data = setting
    heads = cfg.heads.model_copy(update={"learning_rate": 0.05})
    cfg = cfg.model_copy(update={"heads": heads})  # 16 steps that can move the weights
    norms = []
    for l2 in (0.0, 1.0):
        keras.utils.set_random_seed(3)
        head = build_heads(DIM, tasks, 0, 0.0, l2=l2)
        HeadTrainer(tasks, cfg).fit([head], data, tmp_path / str(l2))
        norms.append(sum(np.linalg.norm(head.heads[t.name].scores.kernel) for t in tasks))
    assert norms[1] < 0.5 * norms[0]

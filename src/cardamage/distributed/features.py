"""`cardamage train --ray`: the cached features extracted by a pool of Ray actors.

The cache entry is the one a single process writes (same key, same values within float
tolerance): each actor rebuilds the backbone with the driver's weights, and a chunk of images
is the very batch the single process would give the backbone, augmented as it would be there
(``skip_batches``). Heads, folds and reports stay on the driver, which writes each image's
features into the cache as they arrive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from cardamage.distributed.cluster import connect
from cardamage.train.features import Extractor, FeatureRequest


class RayFill:
    """A ``Fill`` for ``cached_features``: the cache entry's array filled by Ray actors.
    ``functools.partial(RayFill, address)`` is the ``RemoteFill`` `cardamage train --ray`
    gives ``cross_validate``."""

    def __init__(self, address: str | None, extractor: Extractor) -> None:
        self.address, self.extractor = address, extractor

    def __call__(
        self, request: FeatureRequest, out: np.ndarray, batch_size: int, bar: tqdm
    ) -> None:
        ray = connect(self.address)
        chunks = ray.data.from_items(_chunks(request, batch_size))
        actors, gpus = _pool(ray)
        features = chunks.map_batches(
            ChunkExtractor,
            fn_constructor_args=(self.extractor, request),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0 if gpus else 1,
            num_gpus=1 if gpus else None,
        )
        for batch in features.iter_batches(batch_format="numpy", batch_size=None):
            out[batch["view"], batch["index"]] = batch["features"]
            bar.update(len(batch["index"]))


def _chunks(request: FeatureRequest, batch_size: int) -> list[dict]:
    """One item per (view, batch) in the single process's order of batches."""
    paths = [str(Path(p).resolve()) for p in request.paths]
    return [
        {"view": view, "batch": k, "start": start, "paths": paths[start : start + batch_size]}
        for view in range(request.views)
        for k, start in enumerate(range(0, len(paths), batch_size))
    ]


def _pool(ray) -> tuple[int, bool]:
    """(actors, on GPUs): one actor per GPU of the cluster, else one per CPU."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return (gpus, True) if gpus else (max(1, int(resources.get("CPU", 1))), False)


class ChunkExtractor:
    """One actor: the backbone built once, then one chunk of images per call."""

    def __init__(self, extractor: Extractor, request: FeatureRequest) -> None:
        self.model, self.request = extractor.build(), request

    def __call__(self, item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cardamage.data.pipeline import iter_image_batches
        from cardamage.train.features import skip_batches, view_augmenter

        view, k, start = (int(item[key][0]) for key in ("view", "batch", "start"))
        paths = list(item["paths"][0])
        size = self.request.spec.image_size
        [batch] = iter_image_batches(paths, size, len(paths))
        augmenter = view_augmenter(self.request, view)
        if augmenter is not None:
            skip_batches(augmenter, k, batch.shape)
            batch = augmenter(batch, training=True)
        return {
            "view": np.full(len(paths), view),
            "index": np.arange(start, start + len(paths)),
            "features": np.asarray(self.model.predict_on_batch(batch), np.float32),
        }

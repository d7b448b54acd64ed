"""Benchmark of the photo index (issue 32): are reused claim photos found, and how fast?

1. Recall and false matches, on lensor-coco's real photos (one per source photo: the train
   split holds Roboflow's augmented copies of each source) recorded as generated claims of
   three photos: each of ``--queries`` photos is transformed (resize 50 %, JPEG 60, crop 10 %,
   mirror, brightness +25 %), searched in the index as a new claim, and found or not (recall per
   transform, per match kind). False matches: every pair of distinct source photos, compared
   exhaustively by the index's rule (hash within COPY_BITS, mirror included, or features at
   NEAR_COPY_SIMILARITY or more), as a share of pairs; Roboflow's augmented copies of one
   source (the same photo, re-cropped and re-coloured) and the generator's other views of the
   same car (another claim of the same car) are reported apart. A grid of thresholds around
   the chosen ones shows why they were chosen.
2. Search latency and size on an index of ``--size`` photos (synthetic unit vectors of the
   model's width, random hashes) in SQLite: the time to build the in-memory search from the
   database (every process pays it), the index's search latency (database read included)
   beside exact search on the full features (numpy), on ``--threads`` threads; whether each
   photo finds itself first; the file's bytes per photo.

Features: ``--model RUN`` (a trained run), else MobileNetV2 1.0 with ../shared's offline ImageNet
weights at 224 px (the demo's backbone; heads play no part in the features). Skips part 1 when
../shared is absent.

    python -m bench.reused_photos [--queries 200] [--size 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from bench.common import (
    LENSOR,
    WEIGHTS,
    add_model,
    add_seed,
    durations,
    parser,
    saved_model,
    source_photo,
    timed,
)
from cardamage.inference.photo_index.check import open_index
from cardamage.inference.photo_index.fingerprint import Fingerprint, feature_space, hamming
from cardamage.inference.photo_index.store import COPY_BITS, NEAR_COPY_SIMILARITY, Entry
from cardamage.inference.predictor import Predictor
from cardamage.synthetic.claims import draw_claim


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    add_model(p, "a trained run (default: ImageNet MobileNetV2)")
    p.add_argument("--queries", type=int, default=200, help="photos transformed and searched")
    p.add_argument("--photos", type=int, default=0, help="distinct photos indexed (0: all)")
    p.add_argument("--synth-claims", type=int, default=40, help="generated cars for other views")
    p.add_argument("--size", type=int, default=100_000, help="photos in the latency index")
    p.add_argument("--threads", type=int, default=2)
    add_seed(p)
    return p.parse_args()


def crop10(image: Image.Image) -> Image.Image:
    """10 % off the photo's area, from one corner (a crop hides what identifies the claim)."""
    w, h = image.size
    side = np.sqrt(0.9)
    return image.crop((0, 0, round(w * side), round(h * side)))


def jpeg60(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


TRANSFORMS = {
    "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "JPEG 60": jpeg60,
    "crop 10%": crop10,
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "brightness +25%": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
}


def load_predictor(args: argparse.Namespace) -> Predictor:
    predictor = with_features(args)
    predictor.fingerprint = True
    return predictor


def with_features(args: argparse.Namespace) -> Predictor:
    if args.model is not None:
        return Predictor.load(args.model)
    from cardamage.model.metadata import ModelSpec

    spec = ModelSpec(backbone="mobilenetv2", weights=str(WEIGHTS), image_size=224, alpha=1.0)
    out = Path(tempfile.mkdtemp(prefix="reused-model-"))
    saved_model(out, spec, "ImageNet features")
    return Predictor.load(out)


def fingerprints(predictor: Predictor, images: list[Image.Image]) -> list[Fingerprint]:
    pixels = [np.asarray(im.convert("RGB")) for im in images]
    return [p.fingerprint for p in predictor.predict(pixels, batch_size=16)]


def one_per_source(limit: int, rng: np.random.Generator) -> list[Path]:
    by_source: dict[str, Path] = {}
    for path in sorted((LENSOR / "images").rglob("*.jpg")):
        by_source.setdefault(source_photo(path), path)
    paths = list(by_source.values())
    rng.shuffle(paths)
    return paths[:limit] if limit else paths


def matched(a: list[Fingerprint], b: list[Fingerprint], bits: int, cosine: float) -> np.ndarray:
    """(len(a), len(b)) booleans: the index's rule between every pair."""
    ha = np.array([f.phash for f in a])
    hm = np.array([f.phash_mirror for f in a])
    hb = np.array([f.phash for f in b])
    near = hamming(ha[:, None], hb[None, :]) <= bits
    near |= hamming(hm[:, None], hb[None, :]) <= bits
    fa, fb = np.stack([f.features for f in a]), np.stack([f.features for f in b])
    return near | (fa @ fb.T >= cosine)


def part_recall(args: argparse.Namespace, predictor: Predictor) -> None:
    rng = np.random.default_rng(args.seed)
    paths = one_per_source(args.photos, rng)
    images = [Image.open(p).convert("RGB") for p in paths]
    prints, seconds = timed(lambda: fingerprints(predictor, images))
    rate = len(images) / seconds
    print(f"lensor-coco: {len(images)} distinct source photos ({rate:.1f} photos/s fingerprinted)")
    index = open_index(Path(tempfile.mkdtemp()) / "index.sqlite", feature_space(predictor.meta))
    claim_of = {i: f"claim-{i // 3}" for i in range(len(paths))}
    index.add([Entry(claim_of[i], paths[i].name, fp) for i, fp in enumerate(prints)])
    queries = rng.choice(len(paths), min(args.queries, len(paths)), replace=False)
    print(f"\n{len(queries)} photos, each transformed and searched as a new claim:")
    print(f"{'transform':<18}{'recall':>8}{'as copy':>9}{'as near':>9}{'others hit':>12}")
    transformed: dict[str, list[Fingerprint]] = {}
    for name, transform in TRANSFORMS.items():
        transformed[name] = fingerprints(predictor, [transform(images[i]) for i in queries])
        found = copy = wrong = 0
        for i, fp in zip(queries, transformed[name], strict=True):
            matches = index.search(fp, exclude_claim="new")
            hit = [m for m in matches if m.photo == paths[i].name]
            found += bool(hit)
            copy += bool(hit) and hit[0].kind == "copy"
            wrong += len(matches) - len(hit)
        n = len(queries)
        print(f"{name:<18}{found / n:>8.3f}{copy / n:>9.3f}{(found - copy) / n:>9.3f}{wrong:>12}")
    pairs = len(prints) * (len(prints) - 1) // 2
    upper = np.triu_indices(len(prints), 1)
    print("\nfalse matches between distinct source photos, and recall, by threshold:")
    print(f"{'bits':>5}{'cosine':>8}{'false pairs':>13}{'share':>9}  min recall (transform)")
    for bits in (4, COPY_BITS, 8, 10):
        for cosine in (0.85, 0.88, NEAR_COPY_SIMILARITY, 0.92, 0.95):
            false = int(matched(prints, prints, bits, cosine)[upper].sum())
            recalls = {
                name: float(
                    np.mean(np.diag(matched(fps, [prints[i] for i in queries], bits, cosine)))
                )
                for name, fps in transformed.items()
            }
            worst = min(recalls, key=recalls.get)
            chosen = " <- chosen" if (bits, cosine) == (COPY_BITS, NEAR_COPY_SIMILARITY) else ""
            print(
                f"{bits:>5}{cosine:>8.2f}{false:>13}{false / pairs:>9.4%}  "
                f"{recalls[worst]:.3f} ({worst}){chosen}"
            )
    print(f"({pairs:,} pairs)")
    part_related(args, predictor, paths, prints)


def part_related(
    args: argparse.Namespace, predictor: Predictor, paths: list[Path], prints: list[Fingerprint]
) -> None:
    """Matches that are not false ones: the same source photo augmented, the same car's views."""
    by_source: dict[str, list[Path]] = {}
    for path in sorted((LENSOR / "images" / "train").glob("*.jpg")):
        by_source.setdefault(source_photo(path), []).append(path)
    groups = [g[:2] for g in by_source.values() if len(g) >= 2][: args.queries]
    a = fingerprints(predictor, [Image.open(g[0]).convert("RGB") for g in groups])
    b = fingerprints(predictor, [Image.open(g[1]).convert("RGB") for g in groups])
    same = float(np.mean(np.diag(matched(a, b, COPY_BITS, NEAR_COPY_SIMILARITY))))
    print(
        f"\nRoboflow's augmented copies of one source photo (the same photo, re-cropped and "
        f"re-coloured): {same:.1%} of {len(groups)} pairs matched"
    )
    rng = np.random.default_rng(args.seed)
    cars = [draw_claim(rng) for _ in range(args.synth_claims)]
    views = [
        (c, fp)
        for c, car in enumerate(cars)
        for fp in fingerprints(predictor, [p.image for p in car.photos])
    ]
    fps = [fp for _, fp in views]
    car = np.array([c for c, _ in views])
    hit = matched(fps, fps, COPY_BITS, NEAR_COPY_SIMILARITY)
    upper = np.triu(np.ones_like(hit, dtype=bool), 1)
    same_car, other_car = (
        upper & (car[:, None] == car[None, :]),
        upper & (car[:, None] != car[None, :]),
    )
    print(
        f"generated cars ({len(cars)} claims, {len(fps)} photos): other views of the same car "
        f"matched in {hit[same_car].mean():.1%} of {same_car.sum()} pairs; photos of different "
        f"cars in {hit[other_car].mean():.2%} of {other_car.sum()} pairs"
    )


def part_latency(args: argparse.Namespace, dim: int) -> None:
    """The index's own search, database read included: written to SQLite, opened afresh (the
    first search builds the in-memory search, as every process does), then searched."""
    rng = np.random.default_rng(args.seed)
    n = args.size
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hashes = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    picked = rng.choice(n, 200, replace=False)
    print(f"\nsearch on {n:,} photos of {dim} features, {args.threads} thread(s):")
    path = write_index(vectors, hashes)
    index = open_index(path, "bench")
    _, built = timed(lambda: index.search(Fingerprint(0, vectors[0])))
    first = [(index.search(Fingerprint(0, vectors[i])) or [None])[0] for i in picked]
    names = [m.photo if m else "" for m in first]
    itself = np.mean([name == f"{i}.jpg" for i, name in zip(picked, names, strict=True)])
    ours = _latencies(lambda q: index.search(Fingerprint(0, q)), vectors[picked])
    cache = index.search_cache
    memory = cache.reduced.nbytes + cache.ids.nbytes + cache.hashes.nbytes
    print(
        f"  reduced exact + full re-check (the index's search, SQLite read included): p50 "
        f"{ours[0]:.2f} ms, p95 {ours[1]:.2f} ms; built from the database in {built:.1f} s "
        f"({n / built:.0f} photos/s); {memory / 2**20:.0f} MiB; finds the photo itself first "
        f"{itself:.1%}"
    )
    exact = _latencies(lambda q: np.argpartition(-(vectors @ q), 32)[:32], vectors[picked[:50]])
    print(f"  exact, full features (numpy float32): p50 {exact[0]:.2f}, p95 {exact[1]:.2f} ms")


def write_index(vectors: np.ndarray, hashes: np.ndarray) -> Path:
    path = Path(tempfile.mkdtemp()) / "index.sqlite"
    index = open_index(path, "bench")
    batch = 1000
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        index.add(
            [
                Entry(f"claim-{i // 3}", f"{i}.jpg", Fingerprint(int(hashes[i]), vectors[i]))
                for i in range(start, min(start + batch, len(vectors)))
            ]
        )
    took = time.perf_counter() - started
    size = index.stats().size_bytes
    index.close()
    print(
        f"  SQLite: {len(vectors):,} photos written in {took:.1f} s ({len(vectors) / took:.0f}/s), "
        f"{size / len(vectors):.0f} bytes per photo ({size / len(vectors) * 1e5 / 2**20:.0f} MiB "
        "per 100,000 photos)"
    )
    return path


def _latencies(run, queries: np.ndarray) -> tuple[float, float]:
    times = [1000 * seconds for seconds in durations(run, queries)]
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    predictor = load_predictor(args)
    dim = len(predictor.predict([np.zeros((64, 64, 3), np.uint8)])[0].fingerprint.features)
    if LENSOR.exists():
        part_recall(args, predictor)
    else:
        print(f"{LENSOR} not found: recall and false matches not measured")
    part_latency(args, dim)


if __name__ == "__main__":
    main()

"""Group detection: copies of one photo (by Roboflow name or by pixels) share a group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.data.groups import _near_pairs, find_groups, perceptual_hash, roboflow_source


def _photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture: low-frequency structure, like a photo at hash scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def _save(folder: Path, images: dict[str, Image.Image]) -> tuple[list[Path], list[str]]:
    for name, image in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / name, quality=90)
    return [folder / name for name in images], list(images)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("train/0003_JPEG_jpg.rf.3ce3509f.jpg", "0003"),
        ("car-front_png.rf.abc.png", "car-front"),
        ("IMG_1_jpeg.rf.x.jpg", "IMG_1"),
        ("photo.rf.x.jpg", "photo"),
        ("photo_jpg.jpg", None),
        ("sub/plain.png", None),
    ],
)
def test_roboflow_source(name, source):
    assert roboflow_source(name) == source


def test_roboflow_copies_share_a_group_across_splits(tmp_path):
    paths, names = _save(
        tmp_path,
        {
            "train/a_jpg.rf.1.jpg": _photo(1),
            "train/a_jpg.rf.2.jpg": _photo(2),  # an augmented copy: other pixels, same source
            "val/a_jpg.rf.3.jpg": _photo(3),
            "train/b_jpg.rf.4.jpg": _photo(4),
        },
    )
    assert find_groups(paths, names) == ["a", "a", "a", "b"]


def test_identical_and_near_identical_images_share_a_group(tmp_path):
    photo = _photo(7, size=128)
    darker = Image.eval(photo, lambda v: int(v * 0.95))
    paths, names = _save(
        tmp_path,
        {
            "a.png": photo,
            "copy/b.png": photo,  # same pixels, another name
            "c.jpg": photo.resize((80, 80), Image.Resampling.LANCZOS),  # resized, re-encoded
            "d.jpg": darker,
            "other.png": _photo(8, size=128),
        },
    )
    assert find_groups(paths, names) == ["a.png"] * 4 + ["other.png"]


def test_different_images_are_not_grouped(tmp_path):
    paths, names = _save(tmp_path, {f"{i}.png": _photo(100 + i) for i in range(30)})
    assert find_groups(paths, names) == names


def test_explicit_groups_win(tmp_path):
    paths, names = _save(tmp_path, {"x_jpg.rf.1.jpg": _photo(1), "x_jpg.rf.2.jpg": _photo(1)})
    assert find_groups(paths, names, ["g1", "g2"]) == ["g1", "g2"]


def test_unreadable_images_keep_their_name_evidence(tmp_path):
    paths, names = _save(tmp_path, {"a.png": _photo(1)})
    for name in ("p_jpg.rf.1.jpg", "p_jpg.rf.2.jpg", "q.jpg"):
        (tmp_path / name).write_bytes(b"not an image")
    names += ["p_jpg.rf.1.jpg", "p_jpg.rf.2.jpg", "q.jpg"]
    paths += [tmp_path / n for n in names[1:]]
    assert find_groups(paths, names) == ["a.png", "p", "p", "q.jpg"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="2 paths but 1 names"):
        find_groups([Path("a"), Path("b")], ["a"])
    with pytest.raises(ValueError, match=r"0\.\.63"):
        find_groups([], [], max_distance=64)


def test_hash_is_stable_under_re_encoding(tmp_path):
    photo = _photo(3, size=200)
    photo.save(tmp_path / "a.png")
    photo.resize((120, 90)).save(tmp_path / "b.jpg", quality=50)
    distance = (
        perceptual_hash(tmp_path / "a.png") ^ perceptual_hash(tmp_path / "b.jpg")
    ).bit_count()
    assert distance <= 4


@pytest.mark.parametrize("max_distance", [0, 3, 6, 10])
def test_near_pairs_finds_exactly_the_close_pairs(max_distance):
    """The banded search against brute force, on random hashes with planted near copies."""
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**64, 300, dtype=np.uint64)
    flips = [
        sum(1 << int(b) for b in rng.choice(64, rng.integers(1, 13), replace=False)) for _ in base
    ]
    hashes = np.unique(np.concatenate([base, base ^ np.array(flips, dtype=np.uint64)]))
    found = {
        (min(i, j), max(i, j))
        for a, b in _near_pairs(hashes, max_distance)
        for i, j in zip(a.tolist(), b.tolist(), strict=True)
    }
    distance = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    rows, columns = np.nonzero(np.triu(distance <= max_distance, 1))
    expected = set(zip(rows.tolist(), columns.tolist(), strict=True))
    assert found == expected
    assert expected or max_distance == 0

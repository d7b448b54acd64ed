"""The photo index on both stores (SQLite and a real PostgreSQL, see postgres_support): copies
and near-copies of another claim's photos are found, the claim's own are not, deletion is
seen by every reader, several writer processes lose nothing, a killed one leaves whole claims."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from photo_index_support import (
    COPIES,
    SPACE,
    fresh_database,
    pixels,
    random_fingerprint,
    scene,
    write_claims,
    write_forever,
)
from postgres_support import postgres_url  # noqa: F401 (a fixture)

from cardamage.inference.photo_index.check import open_index
from cardamage.inference.photo_index.fingerprint import Fingerprint, hamming
from cardamage.inference.photo_index.store import (
    COPY_BITS,
    Entry,
    IndexUnavailable,
    SqlIndex,
)
from cardamage.inference.predictor import Predictor

DIM = 16


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "index.sqlite")
    return fresh_database(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    predictor = Predictor.load(tiny_model_dir)
    predictor.fingerprint = True
    return predictor


def _fingerprint(predictor: Predictor, image) -> Fingerprint:
    fingerprint = predictor.predict([pixels(image)])[0].fingerprint
    assert fingerprint is not None  # every engine gives the features
    return fingerprint


def test_copies_of_another_claims_photo_are_found_and_the_claims_own_are_not(location, predictor):
    index = open_index(location, SPACE)
    originals = [scene(seed) for seed in range(4)]
    index.add(
        [Entry("A", f"a{i}.jpg", _fingerprint(predictor, im)) for i, im in enumerate(originals)]
    )
    for name, transform in COPIES.items():
        matches = index.search(_fingerprint(predictor, transform(originals[1])), "B")
        assert [(m.claim, m.photo, m.kind) for m in matches] == [("A", "a1.jpg", "copy")], name
        assert index.search(_fingerprint(predictor, transform(originals[1])), "A") == []
    for seed in range(10, 16):  # other photos: nothing
        assert index.search(_fingerprint(predictor, scene(seed)), "B") == []
    index.close()


def test_a_photo_whose_features_match_but_hash_does_not_is_a_near_copy(location):
    index = open_index(location, SPACE)
    original = random_fingerprint(1)
    index.add([Entry("A", "a.jpg", original)])
    flipped_bits = original.phash ^ 0x0F0F_0F0F_0F0F_0F0F  # 32 bits apart: not a copy
    assert hamming(flipped_bits, np.array([original.phash]))[0] > COPY_BITS
    cropped = Fingerprint(flipped_bits, original.features + 0.05 * random_fingerprint(2).features)
    [match] = index.search(cropped, "B")
    assert match.kind == "near-copy" and 0.9 < match.similarity < 1.0
    assert index.search(Fingerprint(flipped_bits, random_fingerprint(3).features), "B") == []


#: The width of real backbone features (MobileNetV2 with its mid-level block): wider than the
#: reduced copy the search scans, so the reduction and the full re-check are exercised.
WIDE = 1856


def test_wide_features_each_find_themselves_first_and_the_threshold_is_the_full_cosine(location):
    index = open_index(location, SPACE)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, WIDE))  # random: the worst case for reduced search
    hashes = rng.integers(-(2**63), 2**63 - 1, len(vectors))
    index.add(
        [
            Entry(f"c{i}", f"{i}.jpg", Fingerprint(int(h), v))
            for i, (h, v) in enumerate(zip(hashes, vectors, strict=True))
        ]
    )
    for i in range(0, len(vectors), 50):
        assert index.search(Fingerprint(0, vectors[i]), "new")[0].photo == f"{i}.jpg"
    v = vectors[7] / np.linalg.norm(vectors[7])
    other = vectors[8] - (vectors[8] @ v) * v
    other /= np.linalg.norm(other)
    for cosine, found in ((0.91, True), (0.89, False)):  # around NEAR_COPY_SIMILARITY, 0.9
        matches = index.search(Fingerprint(0, cosine * v + np.sqrt(1 - cosine**2) * other), "B")
        assert [m.photo for m in matches] == (["7.jpg"] if found else []), cosine
        assert all(abs(m.similarity - cosine) < 0.003 for m in matches)


def test_deletion_and_new_photos_reach_every_open_reader(location):
    writer, reader = open_index(location, SPACE), open_index(location, SPACE)
    prints = [random_fingerprint(i) for i in range(3)]
    writer.add([Entry("A", f"{i}.jpg", p) for i, p in enumerate(prints)])
    writer.add([Entry("B", "x.jpg", prints[0])])
    assert {m.claim for m in reader.search(prints[0], "C")} == {"A", "B"}
    assert writer.delete_claim("A") == 3
    assert [m.claim for m in reader.search(prints[0], "C")] == ["B"]
    assert reader.search(prints[1], "C") == []
    stats = reader.stats()
    assert (stats.photos, stats.claims, stats.dim, stats.feature_space) == (1, 1, DIM, SPACE)
    writer.add([Entry("B", "x.jpg", prints[2])])  # the same photo again: replaced
    assert reader.stats().photos == 1 and reader.search(prints[0], "C") == []


def test_an_index_of_another_models_features_is_refused_by_name(location):
    open_index(location, SPACE).add([Entry("A", "a.jpg", random_fingerprint(0))])
    with pytest.raises(IndexUnavailable, match=r"another model.*cardamage index build"):
        open_index(location, "other-space")
    assert open_index(location).stats().photos == 1  # counting needs no model


def test_several_writer_processes_lose_nothing(location):
    open_index(location, SPACE).close()  # the tables exist before the race
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=write_claims, args=(location, w, 10)) for w in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    index = open_index(location, SPACE)
    stats = index.stats()
    assert (stats.photos, stats.claims) == (3 * 10 * 3, 3 * 10)
    for w in range(3):  # every photo is searchable by every reader
        [match] = index.search(random_fingerprint(w * 10_000 + 9 * 10 + 2), "none")
        assert (match.claim, match.photo, match.kind) == (f"w{w}-c9", "2.jpg", "copy")


def _photos_per_claim(location: str) -> dict[str, int]:
    sql = "SELECT claim, COUNT(*) FROM photos GROUP BY claim"
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            return dict(conn.execute(sql).fetchall())
    with sqlite3.connect(location) as conn:
        return dict(conn.execute(sql).fetchall())


def test_a_writer_killed_mid_claim_leaves_whole_claims_and_a_working_index(location):
    open_index(location, SPACE).close()
    writer = multiprocessing.get_context("spawn").Process(target=write_forever, args=(location,))
    writer.start()
    deadline = time.monotonic() + 60
    while sum(_photos_per_claim(location).values()) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    counts = _photos_per_claim(location)
    assert len(counts) >= 10 and set(counts.values()) == {3}  # no claim half-written
    index = open_index(location, SPACE)
    assert index.stats().photos == 3 * len(counts)
    index.add([Entry("after", "a.jpg", random_fingerprint(999_999_999))])
    assert [m.claim for m in index.search(random_fingerprint(999_999_999), "other")] == ["after"]


def test_a_row_with_torn_features_is_skipped_and_counted(location):
    index = open_index(location, SPACE)
    index.add(
        [Entry("A", "a.jpg", random_fingerprint(0)), Entry("A", "b.jpg", random_fingerprint(1))]
    )
    assert isinstance(index, SqlIndex)
    with index._write() as cur:  # what a foreign or broken writer could leave
        cur.execute(
            index._q(
                "INSERT INTO photos (claim, photo, added, phash, features) VALUES (?, ?, ?, ?, ?)"
            ),
            ("B", "torn.jpg", "2026-01-01T00:00:00+00:00", 0, b"\x00" * 7),
        )
    reader = open_index(location, SPACE)
    assert [m.photo for m in reader.search(random_fingerprint(1), "C")] == ["b.jpg"]
    stats = reader.stats()
    assert stats.photos == 3 and stats.skipped == 1


def test_a_missing_index_file_is_created_with_its_folder(tmp_path: Path):
    path = tmp_path / "new" / "folder" / "index.sqlite"
    open_index(path, SPACE).add([Entry("A", "a.jpg", random_fingerprint(0))])
    assert path.exists() and open_index(path).stats().photos == 1


def test_a_folder_or_a_database_that_is_down_is_a_clear_error(tmp_path: Path):
    with pytest.raises(IndexUnavailable, match="a folder, not an index file"):
        open_index(tmp_path, SPACE)
    url = f"postgresql://nobody:secret@/cardamage?host={tmp_path}&password=pw-in-query&connect_timeout=2"
    with pytest.raises(IndexUnavailable, match="cannot connect") as e:
        open_index(url, SPACE)
    assert "secret" not in str(e.value) and "pw-in-query" not in str(e.value)
    assert "nobody:***@" in str(e.value)

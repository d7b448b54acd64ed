"""Property-based fuzzing of everything that parses user input: images, manifests, configs.

The property: any input either parses or raises CardamageError with a message - never another
exception, a hang or a crash. Bounded in time so it stays part of the normal suite.
"""

from __future__ import annotations

import io
import json
import os
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cardamage.config import load_app_config, load_train_config
from cardamage.data.images import ImageError, load_image
from cardamage.data.manifest import read_manifest
from cardamage.errors import CardamageError
from cardamage.tasks import default_tasks

#: `make fuzz` raises this for a longer run; the suite keeps it small.
EXAMPLES = int(os.environ.get("CARDAMAGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


VALID = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "WEBP", "BMP", "GIF")}


def check_image(data: bytes) -> None:
    try:
        pixels = load_image(data, 16, name="fuzz")
    except ImageError as e:
        assert "fuzz" in str(e)
        return
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    check_image(data)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_corrupted_images_never_crash_the_decoder(fmt: str, data: st.DataObject) -> None:
    raw = bytearray(VALID[fmt])
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8)
    )
    for position, value in flips:
        raw[position] = value
    check_image(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


CELL = st.text(alphabet=string.ascii_letters + string.digits + ";[]/. _-\"'\n,", max_size=20)


@FUZZ
@given(
    st.lists(st.lists(CELL, min_size=0, max_size=6), max_size=8),
    st.sampled_from(
        [
            "image,severity,location,damage_type",
            "name,damage,location,damagetype",
            "image,severity",
            "",
        ]
    ),
)
def test_arbitrary_manifests_parse_or_report(tmp_path: Path, rows, header: str) -> None:
    (tmp_path / "a.jpg").write_bytes(VALID["JPEG"])
    csv_path = tmp_path / "labels.csv"
    body = "\n".join(",".join(row) for row in rows)
    csv_path.write_text(f"{header}\n{body}\n" if header else body, encoding="utf-8")
    try:
        manifest, problems = read_manifest(csv_path, tmp_path, default_tasks())
    except CardamageError:
        return
    assert all(str(p).startswith(str(csv_path)) or "labels.csv" in str(p) for p in problems)
    for image in manifest.images:
        assert (tmp_path / image).resolve().is_relative_to(tmp_path.resolve())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TRAIN_KEYS = st.sampled_from(
    [
        "data",
        "out",
        "backbone",
        "image_size",
        "folds",
        "epochs",
        "tasks",
        "augment",
        "loss_weights",
        "views",
        "colour",
    ]
)
APP_KEYS = st.sampled_from(
    [
        "model",
        "engine",
        "thresholds",
        "debug",
        "damage_model_fp",
        "damage_label_fp",
        "damage_conf_threshold",
        "serve",
        "colour",
    ]
)


@FUZZ
@given(st.dictionaries(TRAIN_KEYS, JSON, max_size=6))
def test_train_configs_validate_or_name_the_field(tmp_path: Path, values: dict) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(values))
    try:
        load_train_config(path, {})
    except CardamageError as e:
        assert str(path) in str(e)


@FUZZ
@given(st.dictionaries(APP_KEYS, JSON, max_size=6) | JSON)
def test_app_configs_validate_or_name_the_field(tmp_path: Path, values) -> None:
    path = tmp_path / "application_config.json"
    path.write_text(json.dumps(values))
    try:
        load_app_config(path)
    except CardamageError as e:
        assert str(path) in str(e)


@pytest.mark.parametrize("text", ["{", "[1, 2]", "\xff\xfe", '{"model": 1e999}'])
def test_broken_json_is_one_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CardamageError, match=str(path)):
        load_app_config(path)

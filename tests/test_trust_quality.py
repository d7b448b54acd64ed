"""Quality checks on constructed photos: each bad kind fails its own check and only that one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from cardamage.config import QualityRules
from cardamage.data.images import Photo, load_image, load_photo
from cardamage.trust.quality import check_quality, measure

RULES = QualityRules()


def _scene(size: int = 224) -> np.ndarray:
    """A photo-like scene: shapes with edges on a gradient, some noise."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(
        np.linspace(60, 190, size, dtype=np.uint8)[None, :, None].repeat(size, 0).repeat(3, 2)
    )
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(8, size // 3, 2)
        draw.rectangle(
            [int(x), int(y), int(x + w), int(y + h)], fill=tuple(rng.integers(0, 256, 3).tolist())
        )
    noisy = np.asarray(image, np.float32) + rng.normal(0, 4, (size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _failed(pixels: np.ndarray) -> set[str]:
    checks = check_quality(Photo.from_pixels(pixels), RULES)
    return {c.name for c in checks if not c.passed}


def test_a_sharp_lit_photo_passes_every_check():
    assert _failed(_scene()) == set()


def test_dark_photo_fails_dark_and_not_bright():
    failed = _failed((_scene() * 0.04).astype(np.uint8))
    assert "dark" in failed and "bright" not in failed


def test_a_dim_flat_photo_is_still_judged():
    """A model still tells severities apart at a fifth of the light and 60 % of the contrast
    (docs/benchmarks/trust.md): declining it would throw away answers, not wrong ones."""
    dim = 40 + (_scene().astype(np.float32) - 40) * 0.6
    assert _failed((dim / 4).astype(np.uint8)) == set()


def test_overexposed_photo_fails_bright():
    assert "bright" in _failed(np.clip(_scene().astype(int) + 200, 0, 255).astype(np.uint8))


def test_blurred_photo_fails_blur_only():
    blurred = np.asarray(Image.fromarray(_scene()).filter(ImageFilter.GaussianBlur(3)))
    assert _failed(blurred) == {"blur"}


def test_uniform_photo_fails_uniform_and_blur():
    flat = np.full((224, 224, 3), 128, np.uint8)
    assert _failed(flat) == {"uniform", "blur"}


def test_tiny_photo_fails_size_from_its_own_size_not_the_model_size(tmp_path):
    path = tmp_path / "thumb.png"
    Image.fromarray(_scene(40)).save(path)
    photo = load_photo(path, 224)
    assert photo.pixels.shape == (224, 224, 3) and photo.size == (40, 40)
    checks = {c.name: c for c in check_quality(photo, RULES)}
    assert not checks["size"].passed and checks["size"].value == 40
    assert checks["size"].message == "too small to judge: send the original photo"
    assert checks["size"].detail == "40 px on the shorter side, under 64"


def test_every_check_reports_its_value_and_threshold():
    checks = check_quality(Photo.from_pixels((_scene() * 0.04).astype(np.uint8)), RULES)
    dark = next(c for c in checks if c.name == "dark")
    assert dark.threshold == RULES.min_brightness and dark.value < dark.threshold
    assert dark.to_dict()["passed"] is False
    assert dark.to_dict()["message"] == "too dark to judge: retake in daylight"
    assert dark.to_dict()["detail"].startswith("brightness ")
    assert dark.to_dict()["detail"].endswith(f", under {RULES.min_brightness:g}")


def test_a_passed_check_carries_no_failure_text():
    checks = check_quality(Photo.from_pixels(_scene()), RULES)
    assert all(c.passed for c in checks)
    for check in checks:
        assert check.message is None and check.detail is None
        assert set(check.to_dict()) == {"name", "value", "threshold", "passed"}


@pytest.mark.parametrize("field", ["min_side", "min_sharpness"])
def test_rules_refuse_nonsense(field):
    with pytest.raises(ValueError, match=field):
        QualityRules(**{field: -1})


def test_a_small_model_sees_the_same_pixels_and_the_checks_a_sharp_photo(tmp_path):
    """A 32 px model's pixels, blown up to 224 px, are a hundred times less sharp; the checks
    measure the photo itself, and the model still gets exactly what training decoded."""
    path = tmp_path / "big.jpg"
    Image.fromarray(_scene(224)).resize((896, 896)).save(path, quality=95)
    photo = load_photo(path, 32)
    np.testing.assert_array_equal(photo.pixels, load_image(path, 32))
    assert _failed(photo.analysis) == set()
    blown_up = measure(Photo.from_pixels(photo.pixels))["blur"]
    assert blown_up < measure(photo)["blur"] / 100

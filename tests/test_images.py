"""Image decoding: every format and mode users bring becomes the same RGB uint8 array, and every
bad file becomes an ImageError naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from cardamage.data.images import ImageError, check_image, load_image

RED = (255, 0, 0)


def _solid(mode: str, color, size=(16, 12)) -> Image.Image:
    return Image.new(mode, size, color)


def _saved(tmp_path: Path, im: Image.Image, name: str, **params) -> Path:
    path = tmp_path / name
    im.save(path, **params)
    return path


def _gradient(width: int, height: int) -> Image.Image:
    """Smooth content: resampling paths may differ only by rounding on it."""
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.broadcast_to((x + y) / 2, (height, width, 1)),
        ],
        axis=2,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def _noise_jpeg(tmp_path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    return _saved(tmp_path, Image.fromarray(noise), "noise.jpg", quality=90)


@pytest.mark.parametrize(
    ("name", "params", "tolerance"),
    [
        ("a.jpg", {"quality": 95}, 4),
        ("a.png", {}, 0),
        ("a.webp", {"lossless": True}, 0),
        ("a.bmp", {}, 0),
        ("a.gif", {}, 0),
    ],
)
def test_formats_decode_to_rgb_uint8(tmp_path, name, params, tolerance):
    path = _saved(tmp_path, _solid("RGB", RED), name, **params)
    image = load_image(path)
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - RED).max() <= tolerance


def test_format_is_detected_by_content_not_extension(tmp_path):
    path = _saved(tmp_path, _solid("RGB", RED), "really_a_png.jpg", format="PNG")
    assert tuple(load_image(path)[0, 0]) == RED


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [_solid("RGB", RED), _solid("RGB", (0, 0, 255))]
    path = _saved(tmp_path, frames[0], "anim.gif", save_all=True, append_images=frames[1:])
    assert tuple(load_image(path)[5, 5]) == RED


@pytest.mark.parametrize(
    ("im", "expected"),
    [
        (_solid("L", 100), (100, 100, 100)),
        (_solid("RGBA", (255, 0, 0, 0)), (255, 255, 255)),  # fully transparent -> white
        (_solid("RGBA", (255, 0, 0, 255)), RED),
        (_solid("LA", (0, 0)), (255, 255, 255)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, im, expected):
    assert tuple(load_image(_saved(tmp_path, im, "a.png"))[0, 0]) == expected


def test_half_transparent_is_composited_on_white(tmp_path):
    path = _saved(tmp_path, _solid("RGBA", (255, 0, 0, 128)), "a.png")
    assert np.abs(load_image(path)[0, 0].astype(int) - (255, 127, 127)).max() <= 1


def test_palette_transparency_is_white(tmp_path):
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0])
    im.putpixel((1, 1), 1)
    image = load_image(_saved(tmp_path, im, "p.png", transparency=0))
    assert tuple(image[0, 0]) == (255, 255, 255)
    assert tuple(image[1, 1]) == RED


def test_cmyk_jpeg_converts(tmp_path):
    path = _saved(tmp_path, _solid("CMYK", (0, 255, 255, 0)), "cmyk.jpg", quality=95)
    assert np.abs(load_image(path)[4, 4].astype(int) - RED).max() <= 6


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    path = _saved(tmp_path, Image.fromarray(values), "deep.png")
    assert Image.open(path).mode.startswith("I")
    assert load_image(path)[0, :, 0].tolist() == [0, 128, 255, 1]


def test_exif_orientation_is_applied(tmp_path):
    im = _solid("RGB", (0, 0, 0), size=(40, 20))
    im.paste(RED, (0, 0, 8, 8))  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image = load_image(_saved(tmp_path, im, "rot.jpg", exif=exif, quality=95))
    assert image.shape == (40, 20, 3)
    assert image[3, 16, 0] > 200 and image[3, 3, 0] < 50  # top-left went to top-right


def test_broken_exif_is_tolerated(tmp_path):
    path = _saved(tmp_path, _solid("RGB", RED), "a.jpg", exif=b"Exif\x00\x00garbage!", quality=95)
    assert load_image(path).shape == (12, 16, 3)


def test_bytes_input_matches_path(tmp_path):
    path = _saved(tmp_path, _gradient(64, 48), "a.png")
    np.testing.assert_array_equal(load_image(path.read_bytes(), 32), load_image(path, 32))


@pytest.mark.parametrize("size", [8, 32, 100])
def test_resize_to_square_without_crop(tmp_path, size):
    im = _solid("RGB", (0, 0, 255), size=(64, 32))
    im.paste(RED, (0, 0, 8, 32))  # a strip at the left edge survives: no crop
    image = load_image(_saved(tmp_path, im, "a.png"), size)
    assert image.shape == (size, size, 3)
    assert image[size // 2, 0, 0] > 100 and image[size // 2, -1, 0] == 0


def test_jpeg_draft_matches_full_decode(tmp_path, monkeypatch):
    path = _saved(tmp_path, _gradient(1024, 768), "big.jpg", quality=95)
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(original(self, mode, size))
        return drafts[-1]

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    image = load_image(path, 128)
    assert drafts and drafts[0] is not None  # decoded at reduced DCT scale
    full = np.asarray(Image.open(path).convert("RGB").resize((128, 128), Image.Resampling.BILINEAR))
    assert np.abs(image.astype(int) - full.astype(int)).mean() < 1.5


def _zero_byte(tmp_path: Path) -> Path:
    return _saved_bytes(tmp_path / "empty.jpg", b"")


def _truncated(tmp_path: Path) -> Path:
    data = _noise_jpeg(tmp_path).read_bytes()
    return _saved_bytes(tmp_path / "cut.jpg", data[: len(data) * 6 // 10])


def _text(tmp_path: Path) -> Path:
    return _saved_bytes(tmp_path / "notes.png", b"this is not an image\n")


def _saved_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_zero_byte, "empty file"),
        (_truncated, "truncated"),
        (_text, "not an image"),
        (lambda tmp: tmp / "missing.jpg", "No such file"),
        (lambda tmp: tmp, "directory"),
    ],
)
def test_bad_files_raise_image_error_naming_them(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(path, 64)
    message = str(info.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    path = _saved(tmp_path, _solid("RGB", RED, size=(100, 100)), "big.png")
    for check in (load_image, check_image):
        with pytest.raises(ImageError, match=r"big\.png.*10000 pixels exceeds the limit of 5000"):
            check(path, max_pixels=5000)


def test_pillow_decompression_bomb_becomes_image_error(tmp_path, monkeypatch):
    path = _saved(tmp_path, _solid("RGB", RED, size=(100, 100)), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"bomb\.png"):
        load_image(path, max_pixels=10**9)


def test_a_bomb_past_pillows_guard_is_refused_with_our_lower_limit(tmp_path, monkeypatch):
    """Pillow refuses first (over twice its MAX_IMAGE_PIXELS); the message names our limit."""
    path = _saved(tmp_path, _solid("RGB", RED, size=(100, 100)), "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for check in (load_image, check_image):
        with pytest.raises(ImageError, match=r"bomb\.png.*10000 pixels exceeds the limit of 1500"):
            check(path, max_pixels=1500)


def test_bad_bytes_are_named(tmp_path):
    with pytest.raises(ImageError, match="upload-7"):
        load_image(b"garbage", name="upload-7")
    with pytest.raises(ImageError, match="empty file"):
        load_image(b"", name="upload-8")


def test_permission_error_is_image_error(tmp_path, monkeypatch):
    path = _saved(tmp_path, _solid("RGB", RED), "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)  # chmod does not stop root, who runs CI
    with pytest.raises(ImageError, match=r"locked\.png.*Permission denied"):
        load_image(path)


def test_check_image_accepts_good_and_rejects_bad(tmp_path):
    check_image(_saved(tmp_path, _solid("RGB", RED), "a.png"))
    with pytest.raises(ImageError, match=r"notes\.png"):
        check_image(_text(tmp_path))


@pytest.mark.parametrize("kept", [100, 30_000], ids=["in-the-header", "in-the-pixels"])
def test_a_truncated_jpeg_has_one_wording_wherever_it_is_cut(tmp_path, kept):
    from cardamage.serve.decoding import DecodeRules, RejectedUpload, decode_upload
    from cardamage.serve.uploads import Upload

    data = _noise_jpeg(tmp_path).read_bytes()
    cut = data[:kept]
    wording = "cannot read image 'cut.jpg': truncated: the file ends before the image does"
    for check in (load_image, check_image):
        with pytest.raises(ImageError) as info:
            check(cut, name="cut.jpg")
        assert str(info.value) == wording
    with pytest.raises(RejectedUpload) as rejected:
        decode_upload(Upload("cut.jpg", cut), DecodeRules(32, ("jpeg",), 10**8))
    assert rejected.value.message == wording

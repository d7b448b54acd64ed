"""Safe image decoding, shared by training and serving so both see exactly the same pixels.

Every way an image can be unusable (missing, empty, corrupt, truncated, too large) becomes one
``ImageError`` naming the file: a bad upload is a user's problem, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cardamage.errors import CardamageError

#: Decompression-bomb guard: a header may promise any size; refuse before allocating it.
DEFAULT_MAX_PIXELS = 50_000_000

#: What Pillow raises on bad input. ``DecompressionBombError`` fires in ``Image.open`` past
#: twice Pillow's own limit; its warning fires above 89M pixels, where our own pixel check
#: refuses the image with a clear message, so the warning is only noise in a server's log. It
#: is ignored once, process-wide, at import: filters cannot be changed per call, as images are
#: decoded from thread pools.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: The one wording for a file that ends early; Pillow says it in several ways.
TRUNCATED = "truncated: the file ends before the image does"

#: Modes whose samples exceed 8 bits; their full-scale value, so they are scaled, not clipped.
_FULL_SCALE = {
    "I": 65535.0,
    "I;16": 65535.0,
    "I;16L": 65535.0,
    "I;16B": 65535.0,
    "I;16N": 65535.0,
    "F": 255.0,
}

Source = str | Path | bytes


class ImageError(CardamageError):
    """An image that cannot be used; the message names the file and the reason."""


#: Side of the square image the quality checks measure, whatever the model's input size: a
#: 32 px model's pixels would look blurred, a thumbnail blown up to 480 px big enough.
ANALYSIS_SIZE = 224


@dataclass(frozen=True)
class Photo:
    """Pixels at model size, with what the quality checks measure: the photo at
    ``ANALYSIS_SIZE`` and the size it came in (width, height)."""

    pixels: np.ndarray
    size: tuple[int, int]
    analysis: np.ndarray

    @classmethod
    def from_pixels(cls, pixels: np.ndarray) -> Photo:
        """A photo known only at model size (the pixels are all there is of it)."""
        pixels = np.asarray(pixels, dtype=np.uint8)
        return cls(pixels, (pixels.shape[1], pixels.shape[0]), _square(pixels, ANALYSIS_SIZE))


def _square(pixels: np.ndarray, side: int) -> np.ndarray:
    if pixels.shape[:2] == (side, side):
        return pixels
    image = Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image)


def load_image(
    source: Source,
    size: int | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """RGB uint8 array (H, W, 3); resized to (size, size) when size is given.

    The whole frame is resized (no crop: damage can sit at the edges). Big JPEGs decode at a
    reduced DCT scale first, which is most of the speed of loading real uploads at model size.
    """
    with _opened(source, name, max_pixels) as im:
        return _sized(_decoded(im, size), size)


def load_photo(
    source: Source,
    size: int | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Photo:
    """``load_image``'s pixels (the very same), with what the quality checks measure. The
    analysis image comes from the same decode when that kept ANALYSIS_SIZE's detail (any photo
    a few times the model's size), else from a second decode at a finer DCT scale."""
    with _opened(source, name, max_pixels) as im:
        stored = im.size
        rgb = _decoded(im, size)
    if min(rgb.size) < min(ANALYSIS_SIZE, *stored):  # the draft dropped detail the checks need
        with _opened(source, name, max_pixels) as im:
            analysis = _sized(_decoded(im, ANALYSIS_SIZE), ANALYSIS_SIZE)
    else:
        analysis = _sized(rgb, ANALYSIS_SIZE)
    return Photo(_sized(rgb, size), stored, analysis)


def _decoded(im: Image.Image, size: int | None) -> Image.Image:
    """8-bit RGB, upright; a JPEG at the coarsest DCT scale still at least ``size``."""
    if size is not None:
        im.draft("RGB", (size, size))
    im.load()
    return _to_rgb(_orient(im))


def _sized(rgb: Image.Image, size: int | None) -> np.ndarray:
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.array(rgb, dtype=np.uint8)


def check_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> None:
    """Raise ImageError unless ``source`` is a usable image, without a full decode.

    Fast enough for thousands of files: other formats check their header and chunk checksums;
    a JPEG, whose verify() reads no scan data, decodes at 1/8 scale so a truncated file fails
    here (naming its manifest row) rather than in the middle of training.
    """
    with _opened(source, name, max_pixels) as im:
        if im.format == "JPEG":
            im.draft("RGB", (1, 1))
            im.load()
        else:
            im.verify()


@contextlib.contextmanager
def _opened(source: Source, name: str | None, max_pixels: int) -> Iterator[Image.Image]:
    """The opened (not yet decoded) image; any Pillow or OS failure inside becomes ImageError."""
    label = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    try:
        with Image.open(_stream(source, label)) as im:
            _check_pixels(im, max_pixels, label)
            yield im
    except Image.DecompressionBombError as e:
        raise ImageError(f"cannot read image '{label}': {bomb_reason(e, max_pixels)}") from e
    except _DECODE_ERRORS as e:
        raise ImageError(f"cannot read image '{label}': {reason(e)}") from e


def _stream(source: Source, label: str) -> Path | io.BytesIO:
    """What Image.open reads; an empty input is named as such, not as 'not an image'."""
    empty = len(source) == 0 if isinstance(source, bytes) else Path(source).stat().st_size == 0
    if empty:
        raise ImageError(f"cannot read image '{label}': empty file (0 bytes)")
    return io.BytesIO(source) if isinstance(source, bytes) else Path(source)


def bomb_reason(e: Image.DecompressionBombError, max_pixels: int) -> str:
    """Pillow refused the header (over twice ``Image.MAX_IMAGE_PIXELS``), naming its own limit
    where ours is lower: said with ours, as a smaller image over it would be."""
    if max_pixels >= 2 * (Image.MAX_IMAGE_PIXELS or 0):
        return reason(e)
    declared = re.search(r"\((\d+) pixels\)", str(e))  # "Image size (N pixels) exceeds ..."
    pixels = declared.group(1) if declared else f"over {2 * Image.MAX_IMAGE_PIXELS}"
    return f"{pixels} pixels exceeds the limit of {max_pixels} (a decompression bomb?)"


def _check_pixels(im: Image.Image, max_pixels: int, label: str) -> None:
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError(
            f"cannot read image '{label}': {width}x{height} = {width * height} "
            f"pixels exceeds the limit of {max_pixels}"
        )


def reason(e: Exception) -> str:
    """One line saying what went wrong, without Pillow's object reprs."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image, or a format Pillow cannot decode"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return TRUNCATED if "truncated" in text.lower() else " ".join(text.split())


def _orient(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation (phones store photos sideways plus a rotation tag)."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF must not cost the image: orientation is best-effort
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any mode; transparency is composited on white, deep samples are scaled."""
    if im.mode in _FULL_SCALE:
        im = _to_8bit(im)
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale 16/32-bit and float samples to 0..255; Pillow's own conversion clips at 255.

    Integer modes are taken as 16-bit data (what files decode to them); float images are taken
    as 0..1 when no sample exceeds 1, else as 0..255.
    """
    values = np.nan_to_num(np.asarray(im, dtype=np.float64))
    full_scale = 1.0 if im.mode == "F" and values.max(initial=0.0) <= 1.0 else _FULL_SCALE[im.mode]
    scaled = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)

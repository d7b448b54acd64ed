"""Uploaded bytes to model pixels, or a per-file rejection with a code a client can act on.

The header is read first (cheap) so the common refusals get precise codes (empty, not an image,
format not accepted, too many pixels) before any pixel is decoded; decoding then goes through
the same ``load_image`` as training and ``Predictor.decode``, so the server sees the same pixels.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from cardamage.config import FORMAT_ALIASES
from cardamage.data.images import ImageError, Photo, bomb_reason, load_photo, reason
from cardamage.serve.uploads import Upload

#: HTTP status of each per-file code, used when no file of a request could be used.
FILE_ERROR_STATUS = {
    "empty_file": 422,
    "not_an_image": 415,
    "unsupported_format": 415,
    "too_many_pixels": 422,
    "corrupt_image": 422,
}

#: What Pillow raises while reading a header that is there but broken.
_HEADER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class RejectedUpload(Exception):
    """One file the model cannot see; the other files of the request go on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return FILE_ERROR_STATUS[self.code]


@dataclass(frozen=True)
class DecodeRules:
    size: int
    formats: tuple[str, ...]
    max_pixels: int


def decode_upload(upload: Upload, rules: DecodeRules) -> Photo:
    """uint8 (size, size, 3) pixels with the photo's size, or RejectedUpload saying why not."""
    name = upload.filename
    if not upload.data:
        raise RejectedUpload("empty_file", f"'{name}' is empty (0 bytes)")
    image_format, (width, height) = _header(upload, rules.max_pixels)
    if image_format not in rules.formats:
        raise RejectedUpload(
            "unsupported_format",
            f"'{name}' is a {image_format.upper()} image; accepted: {', '.join(rules.formats)}",
        )
    if width * height > rules.max_pixels:
        raise RejectedUpload(
            "too_many_pixels",
            f"'{name}' is {width}x{height} = {width * height} pixels, over the limit of "
            f"{rules.max_pixels}",
        )
    try:
        return load_photo(upload.data, rules.size, max_pixels=rules.max_pixels, name=name)
    except ImageError as e:
        raise RejectedUpload("corrupt_image", str(e)) from None


def _header(upload: Upload, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """(lower-case format, size) from the header alone."""
    try:
        with Image.open(io.BytesIO(upload.data)) as im:
            image_format = (im.format or "").lower()
            return FORMAT_ALIASES.get(image_format, image_format), im.size
    except Image.DecompressionBombError as e:
        message = f"'{upload.filename}': {bomb_reason(e, max_pixels)}"
        raise RejectedUpload("too_many_pixels", message) from None
    except UnidentifiedImageError:
        raise RejectedUpload(
            "not_an_image", f"'{upload.filename}' is not an image, or not one this server reads"
        ) from None
    except _HEADER_ERRORS as e:
        message = f"cannot read image '{upload.filename}': {reason(e)}"
        raise RejectedUpload("corrupt_image", message) from None


def decode_all(uploads: list[Upload], rules: DecodeRules) -> list[Photo | RejectedUpload]:
    """Each upload's photo or its rejection, in order; run in a worker thread (CPU-bound)."""
    decoded: list[Photo | RejectedUpload] = []
    for upload in uploads:
        try:
            decoded.append(decode_upload(upload, rules))
        except RejectedUpload as e:
            decoded.append(e)
    return decoded

"""The rule a multi-scale backbone's scales follow: checked when a config is read and when a
model is built, so a bad list is refused before any training starts."""

from __future__ import annotations

from collections.abc import Sequence

from cardamage.errors import CardamageError

#: Every scale of a multi-scale backbone is a multiple of the backbones' total stride: the one
#: network then pads each exactly as a network built for that size would (MobileNetV2 and
#: EfficientNet pad by the input size's parity), and none is under their 32 px minimum.
SCALE_MULTIPLE = 32


def is_multiscale(scales: Sequence[int]) -> bool:
    """Anything but the photo at its input size alone: the backbone then names each scale."""
    return tuple(scales) != (1,)


def check_scales(scales: Sequence[int], image_size: int) -> None:
    """Ascending whole factors of the input size (how explanations find each scale again),
    each giving a multiple of SCALE_MULTIPLE."""
    if (
        not scales
        or list(scales) != sorted(set(scales))
        or any(f < 1 or image_size % f for f in scales)
    ):
        raise CardamageError(
            f"scales {list(scales)}: give ascending whole factors of image_size {image_size}, "
            "e.g. [1, 3] for 480 px (480 and 160 px)"
        )
    odd = [f for f in scales if (image_size // f) % SCALE_MULTIPLE]
    if is_multiscale(scales) and odd:
        raise CardamageError(
            f"scales {list(scales)}: image_size {image_size} / {odd[0]} is not a multiple of "
            f"{SCALE_MULTIPLE} px, which every scale must be, e.g. 480 with [1, 3]"
        )

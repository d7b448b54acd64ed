"""Checks a photo must pass before any model looks at it: big enough, lit, sharp, not blank.

They need no model, so they hold for every engine and every trained model alike. Brightness,
contrast and sharpness are measured on the photo at 224 px (``Photo.analysis``), whatever the
model's input size, so one threshold means the same for a 32 px and a 480 px model;
sharpness is the variance of the Laplacian (Pech-Pacheco et al., 2000), the usual blur measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from cardamage.config import QualityRules
from cardamage.data.images import Photo

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class QualityCheck:
    name: str
    value: float
    threshold: float
    passed: bool
    #: what a person reads when it fails, e.g. "too dark (brightness 12 < 25)"
    message: str

    def to_dict(self) -> dict:
        return {**asdict(self), "value": round(self.value, 3)}


def check_quality(photo: Photo, rules: QualityRules) -> list[QualityCheck]:
    """Every check on one photo, measured on its analysis image and its stored size."""
    grey = np.asarray(photo.analysis, dtype=np.float32) @ _LUMA
    side = float(min(photo.size))
    brightness, contrast = float(grey.mean()), float(grey.std())
    sharpness = float(ndimage.laplace(grey).var())
    return [
        _at_least(
            "size", side, rules.min_side, "too small ({v:.0f} px on the shorter side, under {t:g})"
        ),
        _at_least(
            "dark", brightness, rules.min_brightness, "too dark (brightness {v:.0f}, under {t:g})"
        ),
        _at_most(
            "bright",
            brightness,
            rules.max_brightness,
            "too bright (brightness {v:.0f}, over {t:g})",
        ),
        _at_least(
            "uniform",
            contrast,
            rules.min_contrast,
            "nearly uniform (contrast {v:.1f}, under {t:g})",
        ),
        _at_least(
            "blur", sharpness, rules.min_sharpness, "blurred (sharpness {v:.1f}, under {t:g})"
        ),
    ]


def _at_least(name: str, value: float, threshold: float, message: str) -> QualityCheck:
    return QualityCheck(
        name, value, threshold, value >= threshold, message.format(v=value, t=threshold)
    )


def _at_most(name: str, value: float, threshold: float, message: str) -> QualityCheck:
    return QualityCheck(
        name, value, threshold, value <= threshold, message.format(v=value, t=threshold)
    )

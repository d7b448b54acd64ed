"""Checks a photo must pass before any model looks at it: big enough, lit, sharp, not blank.

They need no model, so they hold for every engine and every trained model alike. Brightness,
contrast and sharpness are measured on the photo at 224 px (``Photo.analysis``), whatever the
model's input size, so one threshold means the same for a 32 px and a 480 px model;
sharpness is the variance of the Laplacian (Pech-Pacheco et al., 2000), the usual blur measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cardamage.config import QualityRules
from cardamage.data.images import Photo

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Rule:
    """One check: what it measures, which way it fails, and what a claims handler is told."""

    name: str
    measure: str  # the figure's name, for engineers: "brightness"
    at_most: bool  # fails above the threshold (else below)
    advice: str  # the reason as a person reads it
    digits: int = 0


RULES = {
    rule.name: rule
    for rule in (
        Rule(
            "size", "px on the shorter side", False, "too small to judge: send the original photo"
        ),
        Rule("dark", "brightness", False, "too dark to judge: retake in daylight"),
        Rule("bright", "brightness", True, "too bright to judge: retake out of glare"),
        Rule("uniform", "contrast", False, "nothing to judge: the photo is nearly blank", 1),
        Rule("blur", "sharpness", False, "too blurred to judge: retake holding still", 1),
    )
}


@dataclass(frozen=True)
class QualityCheck:
    name: str
    value: float
    threshold: float
    passed: bool

    @property
    def message(self) -> str | None:
        """What a person reads when it failed ("too dark to judge: retake in daylight")."""
        return None if self.passed else RULES[self.name].advice

    @property
    def detail(self) -> str | None:
        """The figures beside it, for engineers ("brightness 5, under 8")."""
        if self.passed:
            return None
        rule = RULES[self.name]
        side = "over" if rule.at_most else "under"
        value = f"{self.value:.{rule.digits}f}"
        figure = f"{value} {rule.measure}" if rule.name == "size" else f"{rule.measure} {value}"
        return f"{figure}, {side} {self.threshold:g}"

    def to_dict(self) -> dict:
        """Name, value, threshold, passed; ``message`` and ``detail`` only when it failed."""
        out = {
            "name": self.name,
            "value": round(self.value, 3),
            "threshold": self.threshold,
            "passed": self.passed,
        }
        if not self.passed:
            out |= {"message": self.message, "detail": self.detail}
        return out


def check_quality(photo: Photo, rules: QualityRules) -> list[QualityCheck]:
    """Every check on one photo, measured on its analysis image and its stored size."""
    return judge(measure(photo), rules)


def measure(photo: Photo) -> dict[str, float]:
    """Per check, the photo's figure: what the rules are held against (cache these to judge
    many photos under other rules without decoding them again)."""
    grey = np.asarray(photo.analysis, dtype=np.float32) @ _LUMA
    brightness = float(grey.mean())
    return {
        "size": float(min(photo.size)),
        "dark": brightness,
        "bright": brightness,
        "uniform": float(grey.std()),
        "blur": float(ndimage.laplace(grey).var()),
    }


def judge(measured: dict[str, float], rules: QualityRules) -> list[QualityCheck]:
    """The checks of measured figures under ``rules``."""
    thresholds = {
        "size": rules.min_side,
        "dark": rules.min_brightness,
        "bright": rules.max_brightness,
        "uniform": rules.min_contrast,
        "blur": rules.min_sharpness,
    }
    return [
        QualityCheck(name, value, thresholds[name], _passes(RULES[name], value, thresholds[name]))
        for name, value in measured.items()
    ]


def _passes(rule: Rule, value: float, threshold: float) -> bool:
    return value <= threshold if rule.at_most else value >= threshold

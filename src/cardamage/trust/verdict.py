"""Question 1, whether to answer for one photo at all: the quality checks and the distribution
check. A photo that fails either is declined: it gets no answer anywhere, only its reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardamage.trust.distribution import InDistribution
from cardamage.trust.quality import QualityCheck


@dataclass(frozen=True)
class Problem:
    """Why a photo is declined: the reason as a claims handler says it, the figures beside."""

    message: str
    detail: str

    def __str__(self) -> str:
        return f"{self.message} ({self.detail})"


@dataclass(frozen=True)
class Trust:
    #: None for a model trained before the distribution check existed (it cannot tell)
    in_distribution: InDistribution | None
    quality: list[QualityCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Not a car first (the rest does not matter then), then the failed quality checks."""
        found = []
        seen = self.in_distribution
        if seen is not None and not seen.passed:
            found.append(Problem(seen.message, seen.detail))
        found += [Problem(c.message, c.detail) for c in self.quality if not c.passed]
        return found

    @property
    def abstain(self) -> bool:
        """Declined: a person should look at the photo instead."""
        return bool(self.problems)

    @property
    def reason(self) -> str | None:
        """One sentence for a person: what is wrong with the photo, worst first."""
        problems = self.problems
        return "; ".join(p.message for p in problems) if problems else None

    @property
    def detail(self) -> str | None:
        """The figures behind the reason, for engineers."""
        problems = self.problems
        return "; ".join(p.detail for p in problems) if problems else None

    def to_dict(self) -> dict:
        return {
            "abstain": self.abstain,
            "reason": self.reason,
            "detail": self.detail,
            "in_distribution": self.in_distribution.to_dict() if self.in_distribution else None,
            "quality": {check.name: check.to_dict() for check in self.quality},
        }

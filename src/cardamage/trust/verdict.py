"""Whether to answer for one photo, and why not: the quality checks and the distribution check."""

from __future__ import annotations

from dataclasses import dataclass, field

from cardamage.trust.distribution import InDistribution
from cardamage.trust.quality import QualityCheck


@dataclass(frozen=True)
class Trust:
    #: None for a model trained before the distribution check existed (it cannot tell)
    in_distribution: InDistribution | None
    quality: list[QualityCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        found = [check.message for check in self.quality if not check.passed]
        if self.in_distribution is not None and not self.in_distribution.passed:
            found.append(self.in_distribution.message)
        return found

    @property
    def abstain(self) -> bool:
        return bool(self.problems)

    @property
    def reason(self) -> str | None:
        """One sentence for a person: what is wrong with the photo, worst first."""
        problems = self.problems
        return f"not assessed: {'; '.join(problems)}" if problems else None

    def to_dict(self) -> dict:
        return {
            "abstain": self.abstain,
            "reason": self.reason,
            "in_distribution": self.in_distribution.to_dict() if self.in_distribution else None,
            "quality": {check.name: check.to_dict() for check in self.quality},
        }

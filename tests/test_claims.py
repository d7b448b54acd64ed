"""Claim aggregation on constructed cases: what several photos of one car add up to."""

from __future__ import annotations

import numpy as np
import pytest

from cardamage.inference.claims import RULES, ClaimPhoto, NoEvidence, assess_claim
from cardamage.inference.predictor import Prediction, TaskPrediction
from cardamage.tasks import default_tasks
from cardamage.trust.quality import QualityCheck
from cardamage.trust.review import Confidence, confidence
from cardamage.trust.verdict import Trust

TASKS = {t.name: t for t in default_tasks()}  # severity: minor, moderate, severe, whole


def photo(
    name: str,
    severity,
    location=(0, 0, 0),
    damage=(0, 0, 0, 0),
    failed: str | None = None,
    threshold: float | None = None,
) -> ClaimPhoto:
    """``failed``: the name of a quality check the photo fails (it is then declined);
    ``threshold``: every task's review threshold (None: a model without a review policy)."""
    scores = {"severity": severity, "location": location, "damage_type": damage}
    tasks = {n: TaskPrediction(TASKS[n], np.asarray(s, np.float32)) for n, s in scores.items()}
    checks = [QualityCheck(failed, 1.0, 10.0, False)] if failed else []
    review = {
        n: Confidence(n, float(confidence(TASKS[n], np.asarray(s))[0]), threshold)
        for n, s in scores.items()
    }
    return ClaimPhoto(name, Prediction(tasks, Trust(None, checks), review))


WHOLE = (0.02, 0.01, 0.01, 0.96)
MINOR = (0.85, 0.08, 0.02, 0.05)
SEVERE = (0.02, 0.08, 0.88, 0.02)


@pytest.mark.parametrize("rule", RULES)
def test_a_damage_seen_in_one_photo_of_four_is_kept(rule):
    photos = [photo(f"p{i}", WHOLE) for i in range(3)]
    photos.insert(2, photo("close-up", MINOR, location=(0, 0, 0.9), damage=(0, 0.8, 0, 0)))
    claim = assess_claim("c1", photos, rule)
    assert claim.tasks["damage_type"].labels == ("glass",)
    assert claim.tasks["location"].labels == ("side",)
    [evidence] = claim.tasks["damage_type"].evidence["glass"]
    assert (evidence.photo, round(evidence.score, 3)) == ("close-up", 0.8)
    if rule != "mean":  # a mean dilutes one photo's damage: the whole photos decide severity
        assert claim.tasks["severity"].labels == ("minor",)
        assert claim.photos[0] == "close-up"  # the photo that drove the decision comes first


@pytest.mark.parametrize("rule", RULES)
def test_a_whole_car_stays_whole(rule):
    photos = [photo(f"p{i}", WHOLE, location=(0.1, 0.05, 0.2)) for i in range(6)]
    claim = assess_claim("c", photos, rule)
    assert claim.tasks["severity"].labels == ("whole",)
    assert claim.tasks["location"].labels == claim.tasks["damage_type"].labels == ()
    assert sum(claim.tasks["severity"].scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("rule", ["noisy_or", "max"])
def test_severity_never_lower_than_the_strongest_photo(rule):
    rng = np.random.default_rng(0)
    order = ["whole", "minor", "moderate", "severe"]
    for _ in range(200):
        dists = rng.dirichlet(np.full(4, 0.3), size=int(rng.integers(1, 7)))
        claim = assess_claim("c", [photo(f"p{i}", d) for i, d in enumerate(dists)], rule)
        claimed = order.index(claim.tasks["severity"].labels[0])
        for d in dists:
            at_least = np.cumsum(d[[2, 1, 0]])[::-1]  # P(>= minor), P(>= moderate), P(>= severe)
            supported = max([0] + [k + 1 for k in range(3) if at_least[k] >= 0.5])
            assert claimed >= supported


def test_evidence_adds_up_under_noisy_or_but_not_under_max():
    leaning = (0.3, 0.1, 0.05, 0.55)  # each photo: 45 % that the car is damaged at all
    photos = [photo(f"p{i}", leaning) for i in range(3)]
    assert assess_claim("c", photos, "max").tasks["severity"].labels == ("whole",)
    assert assess_claim("c", photos, "noisy_or").tasks["severity"].labels == ("minor",)


def test_abstained_and_unreadable_photos_are_left_out_with_their_reason():
    photos = [
        photo("blurry", SEVERE, failed="blur"),
        ClaimPhoto("notes.txt", error="not an image"),
        photo("ok", MINOR),
    ]
    claim = assess_claim("c", photos)
    assert claim.photos == ("ok",)
    assert claim.partial == "from 1 of 3 photos"
    reason = "too blurred to judge: retake holding still"
    assert claim.left_out == (("blurry", reason), ("notes.txt", "not an image"))
    assert claim.tasks["severity"].labels == ("minor",)  # the abstained severe photo not counted
    d = claim.to_dict()
    assert d["left_out"][0] == {"photo": "blurry", "reason": reason}
    assert d["assessment"]["severity"]["evidence"]["minor"][0]["photo"] == "ok"
    assert (d["n_photos"], d["partial"]) == (3, "from 1 of 3 photos")


def test_a_claim_decision_has_one_confidence_the_probability_of_at_least_that_level():
    claim = assess_claim("c", [photo("a", (0.3, 0.5, 0.1, 0.1)), photo("b", WHOLE)])
    severity = claim.tasks["severity"]
    assert severity.labels == ("moderate",)
    # max rule: P(at least moderate) = 0.5 + 0.1 from photo a; the exact score is lower
    assert severity.confidence == pytest.approx(0.6)
    assert severity.to_dict()["confidence"] == pytest.approx(0.6)
    assert severity.to_dict()["score"] < severity.confidence
    assert claim.partial is None
    calm = assess_claim("c", [photo("b", WHOLE)]).tasks["severity"]
    assert calm.confidence == pytest.approx(calm.scores["whole"])


def test_a_decision_less_sure_than_its_tasks_threshold_sends_the_claim_to_review():
    leaning = (0.3, 0.5, 0.1, 0.1)  # at least moderate: 0.6, the number shown
    unsure = assess_claim(
        "c", [photo("a", leaning, threshold=0.7), photo("b", WHOLE, threshold=0.7)]
    )
    assert unsure.needs_review
    assert unsure.review_reason == "the severity is uncertain: a person should check it"
    d = unsure.to_dict()
    assert d["needs_review"] and d["confidence"]["severity"]["confidence"] == pytest.approx(0.6)
    assert d["confidence"]["severity"]["detail"] == "confidence 60%, under 70%"
    assert d["confidence"]["location"]["sure"]  # nothing found, every photo sure of it
    # a second photo that sees the damage clearly makes the decision sure
    sure = assess_claim(
        "c",
        [photo("a", leaning, threshold=0.7), photo("c", (0.05, 0.9, 0.03, 0.02), threshold=0.7)],
    )
    assert sure.tasks["severity"].labels == ("moderate",) and not sure.needs_review
    assert sure.to_dict()["review_reason"] is None


def test_a_label_one_photo_barely_finds_sends_the_claim_to_review():
    photos = [
        photo("a", WHOLE, damage=(0.55, 0, 0, 0), threshold=0.8),
        photo("b", WHOLE, damage=(0.1, 0, 0, 0), threshold=0.8),
    ]
    claim = assess_claim("c", photos)
    damage = claim.tasks["damage_type"]
    assert damage.labels == ("dent",) and damage.confidence == pytest.approx(0.55)
    assert [c.task for c in claim.unsure] == ["damage_type"]
    clear = assess_claim("c", [photo("a", WHOLE, damage=(0.97, 0, 0, 0), threshold=0.8)])
    assert not clear.needs_review


def test_a_model_without_a_review_policy_never_sends_a_claim_to_review():
    claim = assess_claim(
        "c", [photo("a", (0.3, 0.3, 0.2, 0.2)), photo("b", (0.25, 0.25, 0.25, 0.25))]
    )
    assert not claim.needs_review
    assert claim.to_dict()["confidence"]["severity"]["threshold"] is None


def test_no_usable_photo_is_no_assessment_with_each_photos_reason():
    with pytest.raises(NoEvidence, match=r"claim 'c9' not assessed: none of its 2 photo") as e:
        assess_claim(
            "c9", [ClaimPhoto("bad.jpg", error="truncated"), photo("dark", MINOR, failed="dark")]
        )
    assert e.value.left_out == (
        ("bad.jpg", "truncated"),
        ("dark", "too dark to judge: retake in daylight"),
    )


def test_unknown_rule_is_refused():
    with pytest.raises(Exception, match="unknown claim rule 'median'"):
        assess_claim("c", [photo("a", WHOLE)], "median")


def test_a_claims_truth_from_its_photos_is_the_worst_severity_and_the_union():
    from pathlib import Path

    from cardamage.data.manifest import Manifest
    from cardamage.reports.claims import claim_members, photo_truth

    manifest = Manifest(
        source=Path("p.csv"),
        image_root=Path("/"),
        images=("a", "b", "c", "d"),
        labels={
            "severity": (("whole",), ("moderate",), ("minor",), ("whole",)),
            "location": ((), ("front",), ("side",), ()),
            "damage_type": ((), ("dent",), ("paint",), ()),
        },
        groups=None,
        lines=(2, 3, 4, 5),
        claims=("c1", "c1", "c1", ""),
    )
    members = claim_members(manifest)
    assert members == {"c1": [0, 1, 2], "d": [3]}
    truth = photo_truth(manifest, list(TASKS.values()), members)
    assert truth["severity"].argmax(axis=1).tolist() == [1, 3]  # moderate; whole
    assert truth["location"].tolist() == [[1, 0, 1], [0, 0, 0]]

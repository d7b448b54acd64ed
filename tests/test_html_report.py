"""The self-contained HTML run report, on run directories made by a real (tiny) training.

The browser test renders the page in headless Chromium (Debian's build, driven by Playwright
for Python) and keeps a full-page screenshot in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from browser_support import CHROMIUM, NO_CHROMIUM, launch, screenshot
from markupsafe import escape

from cardamage.cli import main as cli
from cardamage.config import load_train_config
from cardamage.errors import CardamageError
from cardamage.metrics.classification import task_metrics
from cardamage.metrics.label_review import LABEL_ISSUE_COLUMNS
from cardamage.model.metadata import ModelMeta
from cardamage.reports.heldout import Evaluation, record_evaluation
from cardamage.reports.html_report import write_html_report
from cardamage.runs.rundir import RunDir, write_evaluation
from cardamage.synthetic import generate_claims, generate_dataset
from cardamage.tasks import display_label
from cardamage.train.crossval import cross_validate

#: Labels a careless page would turn into markup.
TRICKY = {"minor": "scratch <5 cm", "moderate": "dent & crease", "severe": '"write-off"'}
ATTRIBUTE = re.compile(r'\b(src|href)\s*=\s*"([^"]*)"')
CONFIDENCE = re.compile(r'<article class="shot" data-confidence="([0-9.]+)">')


def _train(tmp: Path, data: Path, **overrides) -> Path:
    options = {
        "data": data,
        "out": tmp / "run",
        "backbone": "mobilenet",
        "alpha": 0.25,
        "weights": "none",
        "image_size": 32,
        "folds": 2,
        "epochs": 1,
        "views": 1,
        "cache_dir": tmp / "cache",
    }
    cross_validate(load_train_config(None, {**options, **overrides}))
    write_html_report(tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("data"), n=32, size=64, seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset) -> Path:
    """The default three tasks, thresholds tuned."""
    return _train(tmp_path_factory.mktemp("default"), dataset)


@pytest.fixture(scope="module")
def report(run_dir) -> str:
    return write_html_report(run_dir).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tricky_run(tmp_path_factory, dataset) -> Path:
    """One multiclass task with markup-like labels, no multilabel task, thresholds not tuned."""
    tmp = tmp_path_factory.mktemp("tricky")
    labels_file = tmp / "damage.txt"
    labels_file.write_text("\n".join([*TRICKY.values(), "whole"]) + "\n", encoding="utf-8")
    with open(dataset, encoding="utf-8", newline="") as f:
        rows = [(r["image"], TRICKY.get(r["severity"], r["severity"])) for r in csv.DictReader(f)]
    data = dataset.parent / "damage.csv"
    with open(data, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("image", "damage"), *rows])
    task = {"name": "damage", "kind": "multiclass", "labels_file": str(labels_file)}
    return _train(tmp, data, tasks=[task], tune_thresholds=False)


def _gallery(page: str) -> str:
    """The mistakes gallery: up to the doubtful labels every training run now lists."""
    start = page.index('id="mistakes"')
    end = page.find('id="label-issues"', start)
    return page[start : end if end >= 0 else None]


def test_report_names_every_task_and_label_in_plain_words(run_dir, report):
    assert (run_dir / "report.html").is_file()
    text = _without_images(report)
    for task in ModelMeta.read(run_dir / "model").tasks:
        assert f'id="task-{task.name}"' in report
        assert all(escape(display_label(label)) in text for label in task.labels)
    assert "No damage" in text and "whole" not in text
    assert "Damage type" in text and "damage_type<" not in text
    assert "CategoricalAccuracy" not in text and "BinaryAccuracy" not in text
    assert "tuned for F1 out of fold" in report
    assert "confusion matrix" in report and "precision-recall" in report
    assert "Calibration error (ECE)" in report
    assert report.count("Training curves") == 3
    assert 'id="heldout"' not in report  # no held-out evaluation yet
    assert 'id="label-issues"' in report  # every training run reviews its labels


def test_report_is_self_contained(report):
    assert "http://" not in report and "https://" not in report
    assert "<script" not in report and "url(" not in report and "@import" not in report
    refs = ATTRIBUTE.findall(report)
    assert refs, "the page has no images or links at all"
    for attribute, value in refs:
        expected = "data:image/" if attribute == "src" else "#"
        assert value.startswith(expected), f'{attribute}="{value[:60]}" leaves the page'
    images = re.findall(r"<img\b[^>]*>", report)
    assert all('src="data:image/' in tag for tag in images)


def _severity_mistakes(run: Path) -> list[float]:
    """Top scores of wrong severity answers, from the run's CSVs: what the gallery must rank."""
    oof = {r["image"]: r for r in csv.DictReader((run / "oof_predictions.csv").open())}
    truth = {r["image"]: r["severity"] for r in csv.DictReader((run / "manifest.csv").open())}
    found = []
    for image, row in oof.items():
        scores = {k.split(":")[1]: float(v) for k, v in row.items() if k.startswith("severity:")}
        predicted = max(scores, key=scores.get)
        if predicted != truth[image]:
            found.append(scores[predicted])
    return found


def test_gallery_shows_the_worst_photos_most_confident_first(run_dir, report):
    gallery = _gallery(report)
    confidences = [float(c) for c in CONFIDENCE.findall(gallery)]
    assert 1 <= len(confidences) == gallery.count('<article class="shot"') <= 24
    assert confidences == sorted(confidences, reverse=True)
    assert gallery.count('<img src="data:image/jpeg;base64,') == len(confidences)
    assert "photo not available" not in gallery
    severity = _severity_mistakes(run_dir)
    assert severity and confidences[0] >= max(severity) - 5e-5  # CSV scores have 4 decimals


def test_smaller_gallery_is_the_top_of_the_ranking(run_copy, report):
    page = write_html_report(run_copy, worst=3).read_text(encoding="utf-8")
    assert CONFIDENCE.findall(_gallery(page)) == CONFIDENCE.findall(_gallery(report))[:3]


def _without_images(page: str) -> str:
    """The page less its embedded images' data, where base64 may spell any short word (mAP)."""
    return re.sub(r'"data:[^"]*"', '"data:"', page)


def test_run_without_multilabel_tasks_and_with_markup_in_labels(tricky_run):
    page = _without_images(write_html_report(tricky_run).read_text(encoding="utf-8"))
    assert 'id="task-damage"' in page and "confusion matrix" in page
    assert "precision-recall" not in page and "threshold" not in page.lower()
    assert "mAP" not in page and "exact match" not in page  # no task has them: no column
    for label in TRICKY.values():
        assert escape(label) in page
    assert "dent &amp; crease" in page and "<5 cm" not in page and '"write-off"' not in page


@pytest.fixture
def run_copy(run_dir, tmp_path) -> Path:
    """The run's files a report reads, without the models: cheap to alter."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("folds", "*.keras", "*.html"))
    return copy


def test_untuned_thresholds_are_said_so(run_copy):
    config = json.loads((run_copy / "config.json").read_text())
    (run_copy / "config.json").write_text(json.dumps({**config, "tune_thresholds": False}))
    page = write_html_report(run_copy).read_text(encoding="utf-8")
    assert "fixed at 0.5" in page and "tuned for F1" not in page


def test_missing_photos_become_placeholders(run_copy, tmp_path):
    report = write_html_report(run_copy, image_root=tmp_path / "moved", worst=5)
    gallery = _gallery(report.read_text(encoding="utf-8"))
    assert gallery.count('<article class="shot"') == 5
    assert gallery.count("photo not available") == 5 and "<img" not in gallery


def _heldout_metrics(tasks) -> dict[str, dict]:
    """100 photos: severity right but for 2 of 25 minor ones called whole, 1 moderate minor."""
    metrics = {}
    rng = np.random.default_rng(0)
    for task in tasks:
        k = len(task.labels)
        if task.multiclass:
            truth = np.repeat(np.arange(k), 100 // k)
            predicted = truth.copy()
            predicted[:2] = task.labels.index("whole")
            predicted[25] = task.labels.index("minor")
            metrics[task.name] = task_metrics(task, np.eye(k)[truth], np.eye(k)[predicted])
        else:
            truth = (rng.random((100, k)) < 0.4).astype(int)
            metrics[task.name] = task_metrics(task, truth, rng.random((100, k)))
    return metrics


def test_headline_sentence_and_heldout_section(run_copy):
    tasks = RunDir(run_copy).model_meta().tasks
    metrics = _heldout_metrics(tasks)
    write_evaluation(run_copy / "heldout", Path("test.csv"), metrics)
    page = write_html_report(run_copy).read_text(encoding="utf-8")
    headline = re.search(r'<p class="headline">([^<]*)</p>', page)[1]
    exact = round(100 * metrics["location"]["exact_match"])
    assert headline.startswith(
        "On 100 photos it never saw, severity is right 97 % of the time; "
        "\u201cminor\u201d is called \u201cNo damage\u201d 8 % of the time; "
        f"every location label is right on {exact} % of photos; "
    )
    held = page[page.index('id="heldout"') : page.index('id="task-')]
    assert "test.csv" in held and held.count("<tr>") == 1 + 2 * len(tasks)
    assert "held out" in held and "confusion matrix, held out" in held
    assert '<a href="#heldout">' in page


def test_headline_out_of_fold_without_heldout(run_copy):
    summary = json.loads((run_copy / "summary.json").read_text())
    accuracy = summary["tasks"]["severity"]["out_of_fold"]["accuracy"]
    page = write_html_report(run_copy).read_text(encoding="utf-8")
    assert (
        f"On 32 photos, each scored by a fold model that did not train on it, severity is right "
        f"{round(100 * accuracy)} % of the time" in page
    )


def test_evaluate_records_heldout_and_rewrites_report(run_dir, dataset, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("folds"))
    with warnings.catch_warnings():  # the charts are laid out once, as their figures ask
        warnings.filterwarnings("error", "The figure layout has changed")
        assert cli(["evaluate", "--model", str(run), "--data", str(dataset)]) == 0
    evaluation = json.loads((run / "heldout" / "evaluation.json").read_text())
    assert str(run / "report.html") in capsys.readouterr().out
    page = (run / "report.html").read_text(encoding="utf-8")
    accuracy = round(100 * evaluation["tasks"]["severity"]["accuracy"])
    assert f"On 32 photos it never saw, severity is right {accuracy} % of the time" in page


def test_evaluate_on_claims_scores_per_claim_beside_per_photo(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("folds"))
    photos, cars = generate_claims(tmp_path / "claims", n=6, size=64, seed=4)
    args = ["evaluate", "--model", str(run), "--data", str(photos)]
    assert cli([*args, "--claim-labels", str(cars)]) == 0
    out = capsys.readouterr().out
    assert "per claim (6 claims, photos combined by" in out
    assert "severity decided without review for" in out
    assert not (run / "heldout").exists()  # the photos' held-out figures are left alone
    evaluation = json.loads((run / "heldout_claims" / "evaluation.json").read_text())
    claims = evaluation["claims"]
    assert claims["n_claims"] == 6 and claims["truth"] == str(cars)
    assert claims["n_photos"] == evaluation["tasks"]["severity"]["n"] > 6
    assert {t: m["n"] for t, m in claims["tasks"].items()} == dict.fromkeys(claims["tasks"], 6)
    page = (run / "report.html").read_text(encoding="utf-8")
    section = page[page.index('id="claims"') : page.index('id="task-')]
    tasks = RunDir(run).model_meta().tasks
    # per task: per photo, per claim, and per claim without review when any claim was sure
    sure = {name: r["sure"] for name, r in claims["review"].items()}
    assert all(0 <= n <= 6 for n in sure.values())
    rows = 1 + 2 * len(tasks) + sum(n > 0 for n in sure.values())
    assert section.count("<tr>") == rows and "per claim" in section
    assert '<a href="#claims">' in page
    # without the cars' labels, a claim's truth is what its photos add up to
    assert cli([*args, "--out", str(tmp_path / "derived")]) == 0
    derived = json.loads((tmp_path / "derived" / "evaluation.json").read_text())["claims"]
    assert derived["truth"].startswith("the photos' labels")
    partial = tmp_path / "partial.csv"
    partial.write_text("claim,severity\nc00001,minor\n")
    assert cli([*args, "--claim-labels", str(partial), "--out", str(tmp_path / "x")]) == 2
    assert "no column location, damage_type" in capsys.readouterr().err


def test_evaluation_elsewhere_leaves_the_run_alone(run_copy, tmp_path):
    metrics = _heldout_metrics(RunDir(run_copy).model_meta().tasks)
    result = Evaluation(metrics, [], {}, None)
    written = record_evaluation(run_copy, tmp_path / "elsewhere", Path("t.csv"), result)
    assert written == [tmp_path / "elsewhere" / "evaluation.json"]
    assert not (run_copy / "heldout").exists() and not (run_copy / "report.html").exists()
    assert record_evaluation(run_copy / "model", None, Path("t.csv"), result) == []


def _write_label_issues(run: Path, rows: list[tuple]) -> None:
    with open(run / "label_issues.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([LABEL_ISSUE_COLUMNS, *rows])


def test_label_issues_gallery_top_twelve_per_task_by_rank(run_copy):
    images = [r["image"] for r in csv.DictReader((run_copy / "manifest.csv").open())]
    ranks = [*range(15, 0, -1)]  # written worst-last: the page must sort by rank
    rows = [("severity", r, images[r], "g", "whole", "minor", r / 100) for r in ranks]
    rows += [("location", r, images[r], "g", "front", "rear", 0.5) for r in (2, 1)]
    _write_label_issues(run_copy, rows)
    page = write_html_report(run_copy).read_text(encoding="utf-8")
    issues = page[page.index('id="label-issues"') :]
    severity, location = issues.split("<h3>Location</h3>")
    names = re.findall(r'<div class="name" title="([^"]*)">', severity)
    assert names == [images[r] for r in range(1, 13)]
    assert severity.count('<img src="data:image/jpeg;base64,') == 12
    assert severity.count('<div class="given">No damage</div>') == 12
    assert "quality 0.01" in severity and "quality 0.13" not in severity
    assert re.findall(r'<div class="name" title="([^"]*)">', location) == [images[1], images[2]]


def test_unfinished_run_is_a_clear_error(run_copy):
    (run_copy / "summary.json").unlink()
    with pytest.raises(CardamageError, match=r"missing summary\.json"):
        write_html_report(run_copy)
    assert not (run_copy / "report.html").exists()


def _render(page_file: Path, artifact: str) -> dict:
    """Open the page in headless Chromium at 1280 x 900 and measure what a reader would see."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (pip install playwright)",
    )
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    url = page_file.resolve().as_uri()
    seen = {"url": url, "errors": [], "requests": [], "failed": []}
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.on("requestfailed", lambda r: seen["failed"].append(r.url))
        page.goto(url, wait_until="load")
        seen["widths"] = page.evaluate(
            "[...document.images].map(i => i.complete ? i.naturalWidth : 0)"
        )
        seen["overflow"] = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        seen["clipped"] = page.evaluate(
            "[...document.querySelectorAll('.scroll')].filter(s => s.scrollWidth > s.clientWidth)"
            ".map(s => s.closest('section').id)"
        )
        screenshot(page, artifact)
        browser.close()
    return seen


def test_report_renders_in_chromium(run_dir, report):
    seen = _render(run_dir / "report.html", "report.png")
    assert not seen["errors"] and not seen["failed"]
    assert [r for r in seen["requests"] if not r.startswith("data:")] == [seen["url"]]
    assert seen["widths"] and all(w > 0 for w in seen["widths"])
    assert seen["overflow"] <= 0, "the report scrolls sideways on a laptop screen"
    assert not seen["clipped"]


def test_five_fold_report_fits_a_laptop_screen(run_copy):
    """Five folds (the default), a held-out evaluation and doubtful labels: every table whole
    at 1280 px, no column cut off behind a scroll bar."""
    summary = json.loads((run_copy / "summary.json").read_text())
    for task in summary["tasks"].values():
        task["headline"]["per_fold"] = (task["headline"]["per_fold"] * 3)[:5]
    (run_copy / "summary.json").write_text(json.dumps({**summary, "folds": 5, "best_fold": 5}))
    tasks = RunDir(run_copy).model_meta().tasks
    write_evaluation(run_copy / "heldout", Path("heldout/labels.csv"), _heldout_metrics(tasks))
    images = [r["image"] for r in csv.DictReader((run_copy / "manifest.csv").open())]
    _write_label_issues(run_copy, [("severity", 1, images[0], "g", "whole", "minor", 0.02)])
    seen = _render(write_html_report(run_copy), "report-five-folds.png")
    assert not seen["errors"] and seen["overflow"] <= 0
    assert not seen["clipped"], f"tables cut off at 1280 px in {seen['clipped']}"

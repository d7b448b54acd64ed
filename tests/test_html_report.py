"""The self-contained HTML run report, on run directories made by a real (tiny) training.

The browser test renders the page in headless Chromium (Debian's build, driven by Playwright
for Python) and keeps a full-page screenshot in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import pytest
from browser_support import CHROMIUM, NO_CHROMIUM, launch, screenshot

from cardamage.config import load_train_config
from cardamage.data.synthetic import generate_dataset
from cardamage.errors import CardamageError
from cardamage.evaluate.html_report import write_html_report
from cardamage.model.metadata import ModelMeta
from cardamage.train.crossval import cross_validate

#: Labels a careless page would turn into markup.
TRICKY = {"minor": "scratch <5 cm", "moderate": "dent & crease", "severe": '"write-off"'}
ATTRIBUTE = re.compile(r'\b(src|href)\s*=\s*"([^"]*)"')


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
    return page[page.index('id="mistakes"') :]


def test_report_names_every_task_and_label(run_dir, report):
    assert (run_dir / "report.html").is_file()
    for task in ModelMeta.read(run_dir / "model").tasks:
        assert f'id="task-{task.name}"' in report
        assert all(html.escape(label) in report for label in task.labels)
    assert "tuned for F1 out of fold" in report
    assert "confusion matrix" in report and "precision-recall" in report and "ECE" in report
    assert report.count("Training curves") == 3


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


def test_gallery_shows_the_worst_photos(report):
    gallery = _gallery(report)
    cards = gallery.count('<article class="shot">')
    assert 1 <= cards <= 24
    assert gallery.count('<img src="data:image/jpeg;base64,') == cards
    assert "photo not available" not in gallery


def _without_images(page: str) -> str:
    """The page less its embedded images' data, where base64 may spell any short word (mAP)."""
    return re.sub(r'"data:[^"]*"', '"data:"', page)


def test_run_without_multilabel_tasks_and_with_markup_in_labels(tricky_run):
    page = _without_images(write_html_report(tricky_run).read_text(encoding="utf-8"))
    assert 'id="task-damage"' in page and "confusion matrix" in page
    assert "precision-recall" not in page and "threshold" not in page.lower()
    assert "mAP" not in page and "exact match" not in page  # no task has them: no column
    for label in TRICKY.values():
        assert html.escape(label) in page
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
    assert gallery.count('<article class="shot">') == 5
    assert gallery.count("photo not available") == 5 and "<img" not in gallery


def test_unfinished_run_is_a_clear_error(run_copy):
    (run_copy / "summary.json").unlink()
    with pytest.raises(CardamageError, match=r"missing summary\.json"):
        write_html_report(run_copy)
    assert not (run_copy / "report.html").exists()


def test_report_renders_in_chromium(run_dir, report):
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (pip install playwright)",
    )
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    url = (run_dir / "report.html").resolve().as_uri()
    errors, requests, failed = [], [], []
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(url, wait_until="load")
        widths = page.evaluate("[...document.images].map(i => i.complete ? i.naturalWidth : 0)")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        screenshot(page, "report.png")
        browser.close()
    assert not errors and not failed
    assert [r for r in requests if not r.startswith("data:")] == [url]
    assert widths and all(w > 0 for w in widths)
    assert overflow <= 0, "the report scrolls sideways on a laptop screen"

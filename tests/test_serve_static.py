"""The web page in headless Chromium (Debian's build, driven by Playwright for Python).

Screenshots go to test-artifacts/ at the repository root, for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import CHROMIUM, NO_CHROMIUM, launch, screenshot
from conftest_serve import car_photo, encoded, live_server

from cardamage.inference.predictor import Predictor
from cardamage.serve.app import create_app
from cardamage.serve.service import with_thresholds
from cardamage.serve.settings import ServeSettings
from cardamage.trust.review import ReviewPolicy

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)

TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.load(tiny_model_dir)


@pytest.fixture(scope="module")
def server(predictor):
    with live_server(create_app(ServeSettings(api_key=None), predictor)) as s:
        yield s


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = {
        "front-bumper.jpg": encoded(car_photo(), quality=90),
        "rear-quarter.png": encoded(car_photo(480, 640).transpose(0), "PNG"),
        "notes.txt": b"this is not a photo",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def _open(browser, url: str, width: int, height: int):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    sync_api.expect(page.locator("#status")).to_have_text("Model ready")
    return page


def test_upload_shows_severity_bars_and_rejections(browser, server, photos, predictor):
    page = _open(browser, server.url, 1280, 900)
    page.set_input_files("#picker", [str(p) for p in photos.values()])
    cards = page.locator(".card")
    sync_api.expect(cards).to_have_count(3)
    sync_api.expect(page.locator(".card .headline")).to_have_count(2)
    sync_api.expect(page.locator(".card__error")).to_have_count(1)

    expected = predictor.predict([photos["front-bumper.jpg"].read_bytes()])[0]
    severity = expected.tasks["severity"]
    first = cards.nth(0)
    assert first.locator(".card__name").inner_text() == "front-bumper.jpg"
    label, score = severity.labels[0]
    shown = "no damage" if label == "whole" else label
    assert first.locator(".headline__value").inner_text().lower() == shown
    assert first.locator(".headline__pct").inner_text() == f"{round(score * 100)}%"
    labels = sum(len(t.labels) for t in predictor.tasks)
    sync_api.expect(first.locator(".bar")).to_have_count(labels)
    widths = first.locator(".bar__fill").evaluate_all("els => els.map(e => e.style.width)")
    assert all(w.endswith("%") for w in widths) and len(widths) == labels

    names = first.locator(".bar__name").all_inner_texts()
    assert "No damage" in names and "whole" not in names  # the label whole, as a person reads it

    rejected = cards.nth(2)
    assert "notes.txt" in rejected.inner_text() and "not an image" in rejected.inner_text()
    assert page.locator("#model-info").inner_text().startswith("Model mobilenet-32px")
    screenshot(page, "serve-page.png")

    page.set_input_files("#picker", str(photos["notes.txt"]))  # a request with no usable file
    sync_api.expect(cards).to_have_count(4)
    sync_api.expect(cards.nth(3).locator(".card__error")).to_contain_text("not an image")
    page.close()


def test_photos_added_together_are_one_claim_card(browser, server, photos, predictor):
    page = _open(browser, server.url, 1280, 900)
    page.set_input_files("#picker", [str(p) for p in photos.values()])
    claim = page.locator(".claim")
    sync_api.expect(claim).to_have_count(1)
    sync_api.expect(claim.locator(".claim__result")).to_have_count(1)
    assert "3 photos of one car" in claim.locator(".claim__title").inner_text()
    sync_api.expect(claim.locator(".card")).to_have_count(3)  # each photo's card inside it
    good = [photos["front-bumper.jpg"].read_bytes(), photos["rear-quarter.png"].read_bytes()]
    expected = predictor.assess(good).tasks["severity"].labels[0]
    shown = "no damage" if expected == "whole" else expected
    value = claim.locator(".claim__summary .headline__value").inner_text()
    assert value.lower() == shown
    # one number for the decision (its confidence), and the headline says photos were left out
    decision = predictor.assess(good).tasks["severity"]
    pct = claim.locator(".claim__summary .headline__pct")
    assert pct.inner_text() == f"{round(decision.confidence * 100)}%"
    sync_api.expect(claim.locator(".claim__summary")).not_to_contain_text("at least")
    sync_api.expect(claim.locator(".headline__partial")).to_have_text("from 2 of 3 photos")
    assert "notes.txt" in claim.locator(".claim__left-out").inner_text()
    used = claim.locator(".claim__photos-used").inner_text()
    assert "front-bumper.jpg" in used and "rear-quarter.png" in used
    screenshot(page, "serve-claim.png")
    page.set_input_files("#picker", str(photos["front-bumper.jpg"]))  # one photo: no claim
    sync_api.expect(page.locator(".card")).to_have_count(4)
    sync_api.expect(claim).to_have_count(1)
    page.close()


def test_a_claim_under_its_review_threshold_says_so_above_its_verdict(
    browser, tiny_model_dir, photos
):
    strict = Predictor.load(tiny_model_dir)  # every decision under a threshold of 0.999
    strict.review = ReviewPolicy(dict.fromkeys((t.name for t in strict.tasks), 0.999), {})
    with live_server(create_app(ServeSettings(api_key=None), strict)) as strict_server:
        page = _open(browser, strict_server.url, 1280, 900)
        page.set_input_files(
            "#picker", [str(photos["front-bumper.jpg"]), str(photos["rear-quarter.png"])]
        )
        summary = page.locator(".claim .claim__summary")
        sync_api.expect(summary.locator(".card__review")).to_contain_text("Needs review")
        sync_api.expect(summary.locator(".card__review")).to_contain_text(
            "the severity is uncertain: a person should check it"
        )
        # above the verdict, which is still given
        sync_api.expect(summary.locator(".headline__value")).to_have_count(1)
        page.close()


def test_phone_sized_screen_with_heatmaps(browser, server, photos):
    page = _open(browser, server.url, 390, 844)
    page.check("#explain", force=True)
    page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
    heatmap = page.locator(".media__heatmap")
    sync_api.expect(heatmap).to_be_visible()
    assert heatmap.get_attribute("src").startswith("data:image/png;base64,")
    page.get_by_role("button", name="Photo", exact=True).click()
    sync_api.expect(heatmap).to_be_hidden()
    page.get_by_role("button", name="Severity heatmap").click()
    sync_api.expect(heatmap).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page scrolls sideways on a phone"
    screenshot(page, "serve-page-phone.png")
    page.close()


def test_a_server_with_an_api_key_asks_for_it(browser, predictor, photos):
    settings = ServeSettings(api_key="let-me-in")
    with live_server(create_app(settings, predictor)) as keyed:
        page = _open(browser, keyed.url, 1000, 800)
        sync_api.expect(page.locator("#keyform")).to_be_visible()
        page.fill("#apikey", "let-me-in")
        page.click("#keyform button")
        sync_api.expect(page.locator("#keyform")).to_be_hidden()
        page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
        sync_api.expect(page.locator(".headline")).to_have_count(1)
        page.close()


def test_clear_results_shows_only_when_there_are_results(browser, server, photos):
    page = _open(browser, server.url, 1280, 900)
    clear = page.locator("#clear")
    sync_api.expect(clear).to_be_hidden()  # an empty page has nothing to clear
    page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
    sync_api.expect(clear).to_be_visible()
    clear.click()
    sync_api.expect(page.locator(".card")).to_have_count(0)
    sync_api.expect(clear).to_be_hidden()
    page.close()


def test_heatmaps_switched_on_after_an_upload_appear_with_caption_and_legend(
    browser, predictor, photos
):
    """No damage type over its threshold: that task says so instead of mapping noise."""
    found_nothing = with_thresholds(predictor, {"location": 0.0, "damage_type": 1.0})
    with live_server(create_app(ServeSettings(api_key=None), found_nothing)) as s:
        page = _open(browser, s.url, 1280, 900)
        page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
        sync_api.expect(page.locator(".headline")).to_have_count(1)
        heatmap = page.locator(".media__heatmap")
        sync_api.expect(heatmap).to_have_count(0)
        page.check("#explain", force=True)  # after the upload: the shown photo gets its maps
        sync_api.expect(heatmap).to_be_visible()
        caption = page.locator(".heatmaps__caption")
        sync_api.expect(caption).to_contain_text("Severity heatmap: ")
        sync_api.expect(caption).to_contain_text("%")
        sync_api.expect(page.locator(".legend")).to_be_visible()
        sync_api.expect(page.locator(".heatmaps__none")).to_have_text(
            "No damage type found: nothing to map"
        )
        buttons = page.locator(".views button").all_inner_texts()
        assert buttons == ["Photo", "Severity heatmap", "Location heatmap"]
        page.get_by_role("button", name="Location heatmap").click()
        sync_api.expect(caption).to_contain_text("Location heatmap: Front ")
        screenshot(page, "serve-page-heatmaps.png")
        page.uncheck("#explain", force=True)
        sync_api.expect(heatmap).to_be_hidden()
        page.close()


def test_a_photo_the_model_will_not_answer_for_shows_why_not_a_severity(browser, server, tmp_path):
    dark = tmp_path / "night.jpg"
    dark.write_bytes(encoded(car_photo().point(lambda v: v // 40), quality=90))
    page = _open(browser, server.url, 1280, 900)
    page.set_input_files("#picker", str(dark))
    card = page.locator(".card").first
    sync_api.expect(card.locator(".card__abstain")).to_contain_text("Not assessed")
    sync_api.expect(card.locator(".abstain__reasons li").first).to_contain_text("too dark")
    sync_api.expect(card.locator(".headline")).to_have_count(0)
    sync_api.expect(card.locator(".bar")).to_have_count(0)
    screenshot(page, "serve-page-abstain.png")
    page.close()


def _in_view(selector: str, index: int) -> str:
    """A JS predicate: the index-th match's top edge is inside the window."""
    return (
        f"() => {{ const n = document.querySelectorAll({selector!r})[{index}];"
        " if (!n) return false; const r = n.getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; }"
    )


def test_a_second_upload_comes_into_view_and_the_first_stays(browser, server, photos):
    """On a phone the first card fills the screen: the second lands below the fold."""
    page = _open(browser, server.url, 390, 700)
    page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
    sync_api.expect(page.locator(".headline")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")  # the user reads the page from the top again
    page.set_input_files("#picker", str(photos["rear-quarter.png"]))
    page.wait_for_function(_in_view(".card", 1), timeout=5000)
    sync_api.expect(page.locator(".card")).to_have_count(2)
    sync_api.expect(page.locator(".headline")).to_have_count(2)
    page.evaluate("window.scrollTo(0, 0)")
    page.set_input_files("#picker", [str(photos["front-bumper.jpg"]), str(photos["notes.txt"])])
    page.wait_for_function(_in_view(".claim", 0), timeout=5000)  # a claim card, too
    page.close()


def test_the_threshold_marks_are_explained_on_every_card(browser, server, photos):
    page = _open(browser, server.url, 1280, 900)
    page.set_input_files("#picker", str(photos["front-bumper.jpg"]))
    key = page.locator(".card .bars__key")
    sync_api.expect(key).to_have_count(1)
    sync_api.expect(key).to_contain_text("marks a label's threshold")
    tick = page.locator(".bar__tick").first
    assert "threshold" in tick.get_attribute("title")
    page.close()


def test_no_damage_beside_a_damage_found_says_how_both_can_be(browser, predictor, photos):
    every_type = with_thresholds(predictor, {"damage_type": 0.0})  # every type passes
    png, jpeg = photos["rear-quarter.png"], photos["front-bumper.jpg"]
    severities = [p.tasks["severity"].labels[0][0] for p in predictor.predict([png, jpeg])]
    assert severities[0] == "whole" != severities[1], "the tiny model's answers changed"
    with live_server(create_app(ServeSettings(api_key=None), every_type)) as s:
        page = _open(browser, s.url, 1280, 900)
        page.set_input_files("#picker", str(png))
        note = page.locator(".card .card__note")
        sync_api.expect(note).to_contain_text("No damage is the likeliest severity (")
        sync_api.expect(note).to_contain_text("passed their thresholds: the tasks are decided")
        screenshot(page, "serve-page-no-damage-beside-damage.png")
        page.set_input_files("#picker", str(jpeg))  # a damaged car: nothing to reconcile
        sync_api.expect(page.locator(".headline")).to_have_count(2)
        sync_api.expect(note).to_have_count(1)
        page.close()


def test_a_claim_of_declined_photos_says_so_once_and_each_photo_why(browser, server, tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"night{i}.jpg")
        paths[-1].write_bytes(encoded(car_photo().point(lambda v: v // 40), quality=90))
    page = _open(browser, server.url, 1280, 900)
    page.set_input_files("#picker", [str(p) for p in paths])
    claim = page.locator(".claim")
    sync_api.expect(claim.locator(".claim__summary .card__abstain")).to_contain_text(
        "Claim not assessed"
    )
    sync_api.expect(claim.locator(".claim__summary")).to_contain_text("none of its 2 photo(s)")
    cards = claim.locator(".card")
    sync_api.expect(cards.locator(".card__abstain")).to_have_count(2)  # not "Photo rejected"
    sync_api.expect(cards.locator(".card__error")).to_have_count(0)
    for i in range(2):
        card = cards.nth(i)
        sync_api.expect(card.locator(".abstain__reasons li").first).to_contain_text(
            "too dark to judge: retake in daylight"
        )
        sync_api.expect(card).not_to_contain_text("none of its")  # the claim's error said once
    sync_api.expect(claim.locator(".headline")).to_have_count(0)
    page.check("#explain", force=True)  # a declined photo has no answer, so no heatmap either
    sync_api.expect(claim.locator(".media__heatmap")).to_have_count(0)
    screenshot(page, "serve-claim-declined.png")
    page.close()

"""The claim card on the web page (headless Chromium) says which earlier claim a photo was found
in, at its top, when the server has a photo index."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import CHROMIUM, NO_CHROMIUM, launch, screenshot
from conftest_serve import live_server
from photo_index_support import mirrored, scene

from cardamage.serve.app import create_app
from cardamage.serve.settings import ServeSettings

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


def test_the_claim_card_shows_photos_found_in_an_earlier_claim(tiny_model_dir, tmp_path: Path):
    photos = {
        "front.jpg": scene(20),
        "side.jpg": scene(21),
        "again.jpg": mirrored(scene(21)),
        "rear.jpg": scene(22),
    }
    for name, image in photos.items():
        image.save(tmp_path / name, quality=95)
    settings = ServeSettings(model=tiny_model_dir, api_key=None, photo_index=str(tmp_path / "i.db"))
    with sync_api.sync_playwright() as playwright, live_server(create_app(settings)) as server:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(server.url)
        sync_api.expect(page.locator("#status")).to_have_text("Model ready")
        page.set_input_files("#picker", [str(tmp_path / n) for n in ("front.jpg", "side.jpg")])
        first = page.locator(".claim").nth(0)
        sync_api.expect(first.locator(".claim__result")).to_have_count(1)
        assert first.locator(".claim__seen-before").count() == 0
        page.set_input_files("#picker", [str(tmp_path / n) for n in ("again.jpg", "rear.jpg")])
        second = page.locator(".claim").nth(1)
        sync_api.expect(second.locator(".claim__result")).to_have_count(1)
        seen = second.locator(".claim__result > :first-child")  # at the top of the card
        sync_api.expect(seen).to_have_class("claim__seen-before")
        text = seen.inner_text()
        assert text.startswith("⚠ Photos found in claim Claim 1 · ")
        assert text.endswith(": again.jpg (copy of side.jpg)")
        screenshot(page, "serve-claim-seen-before.png")
        browser.close()

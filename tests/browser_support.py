"""Headless Debian Chromium for browser tests (Playwright's own browser download cannot work
offline). Flags keep Chromium from reaching for the network, which this machine refuses."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
NO_CHROMIUM = f"no Chromium at {CHROMIUM} (apt-get install chromium)"


def launch(playwright):
    """A headless Chromium browser from Debian's package."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path

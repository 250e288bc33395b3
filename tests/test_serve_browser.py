"""The web page in a real browser: Debian's headless Chromium driven by Playwright against the running service.

Skips where /usr/bin/chromium (or $COLDSTART_CHROMIUM) is absent. Set COLDSTART_SCREENSHOTS=DIR to keep the
screenshots (docs/images/ was made that way); COLDSTART_SERVE_RUN=RUN_DIR drives a real run instead of the tiny one,
COLDSTART_SCREENSHOT_POSTER=FILE uploads that poster instead of random pixels.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("faiss", reason="the serve extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")
pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")

from tests.serve_helpers import API_KEY, free_port, png_bytes, serve_run_fixture  # noqa: E402

CHROMIUM = os.environ.get("COLDSTART_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def serve_run(tmp_path_factory):
    return serve_run_fixture(tmp_path_factory)


@pytest.fixture()
def server(serve_run, tmp_path):
    """The app under uvicorn in a thread, on a free loopback port."""
    from coldstart_serve.app import create_app

    run = Path(os.environ.get("COLDSTART_SERVE_RUN") or serve_run)
    app = create_app(run, db=tmp_path / "serve.db", api_key=API_KEY)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", app.state.service
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and os.access(CHROMIUM, os.X_OK)),
                    reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
def test_pick_a_user_then_add_a_film_and_see_its_audience(server, tmp_path):
    from playwright.sync_api import sync_playwright

    base, service = server
    shots = Path(os.environ.get("COLDSTART_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    poster = tmp_path / "poster.png"
    given = os.environ.get("COLDSTART_SCREENSHOT_POSTER")  # a real poster makes nicer documentation shots
    poster.write_bytes(Path(given).read_bytes() if given else png_bytes(120, 180, seed=7))
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=20_000)
            assert service.model.name in page.inner_text("#run-summary")

            # a user: history and top-K
            page.fill("#user-id", service.user_ids[0])
            page.fill("#k", "8")
            page.click("#user-form button")
            page.wait_for_function("document.querySelectorAll('#recs li').length === 8", timeout=20_000)
            shown = page.eval_on_selector_all("#recs li", "els => els.map(e => e.dataset.item)")
            want = service.recommend(service.user_ids[0], 8, True, "all").items
            assert shown == [r.item for r in want]
            assert page.eval_on_selector_all("#history li", "els => els.length") > 0
            page.screenshot(path=str(shots / "serve-user.png"), full_page=True)

            # a new film: the form is built from /info
            page.fill("#api-key", API_KEY)
            page.fill("#item-id", "browser-film")
            page.fill("#item-title", "The Browser Film")
            boxes = page.query_selector_all("#item-fields fieldset input[type=checkbox]")
            for box in boxes[:2]:
                box.check()
            for area in page.query_selector_all("#item-fields textarea"):
                area.fill("A heist in a storm-bound city, told by a ghost.")
            for typed in page.query_selector_all("#item-fields input[data-kind='labels-text']"):
                typed.fill("Tom Hanks, Meg Ryan")
            page.set_input_files("#poster", str(poster))
            page.click("#item-form button")
            page.wait_for_function("document.querySelectorAll('#audience li').length === 10", timeout=30_000)
            page.wait_for_function("document.querySelectorAll('#ranks tbody tr').length > 0", timeout=20_000)
            assert "added browser-film" in page.inner_text("#item-result")
            assert page.inner_text("#item-error") == ""
            audience = page.eval_on_selector_all("#audience li", "els => els.map(e => e.dataset.user)")
            assert audience == [u.user for u in service.audience("browser-film", 10).users]
            page.screenshot(path=str(shots / "serve-new-film.png"), full_page=True)

            # the new film is now a candidate for its first audience member
            page.fill("#user-id", audience[0])
            page.select_option("#candidates", "cold")
            page.fill("#k", "100")
            page.click("#user-form button")
            page.wait_for_selector("#recs li[data-item='browser-film']", timeout=20_000)
            assert page.locator("#recs li[data-item='browser-film'] img").count() == 1

            # a write without the key is refused on the page, with the reason shown
            page.fill("#api-key", "")
            page.fill("#item-id", "no-key-film")
            page.click("#item-form button")
            page.wait_for_function("document.querySelector('#item-error').textContent.startsWith('401')",
                                   timeout=20_000)
        finally:
            browser.close()
    assert not errors, errors
    assert (shots / "serve-new-film.png").stat().st_size > 10_000
    if not os.environ.get("COLDSTART_SCREENSHOTS"):
        shutil.rmtree(shots, ignore_errors=True)

"""The page in a real browser: headless Debian Chromium driven by Playwright uploads a face photo
and a text file to a live `fakeface serve` on a free localhost port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from conftest import compose
from test_serve import tiny_classifier

playwright_api = pytest.importorskip("playwright.sync_api")
skimage_data = pytest.importorskip("skimage.data")
# Debian's chromium package (.ci/run installs it); Playwright never downloads a browser here.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium"),
]
# The flags of a headless browser on a machine with no network beyond localhost.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def start_server(overrides: list[str]) -> Iterator[str]:
    """A live `fakeface serve` (uvicorn in a thread) on a free port; yields its address."""
    from fakeface.serve.app import build_app, serve_in_thread

    with serve_in_thread(build_app(compose("serve", overrides))) as url:
        yield url


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = tiny_classifier(tmp_path_factory.mktemp("browser") / "classifier.ts")
    yield from start_server([f"classifier={model}"])


def test_the_page_boxes_labels_and_explains_a_face_and_names_a_bad_file(
    live_server: str, tmp_path: Path
) -> None:
    photo, text = tmp_path / "astronaut.jpg", tmp_path / "notes.txt"
    Image.fromarray(skimage_data.astronaut()).save(photo, quality=90)
    text.write_text("not a photo")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(live_server)
        page.wait_for_selector("#model b")  # the model line, from /api/model
        assert "synthetic" in page.inner_text("#caveat")
        page.set_input_files("#pick", [str(photo), str(text)])
        page.wait_for_selector(".photo .box", timeout=60_000)
        # one photo with one box whose label says the verdict and the score
        label = page.inner_text(".photo .box .face-label")
        verdict = label.split()[1]
        assert verdict in ("real", "fake", "unsure") and label.endswith("% fake")
        assert page.get_attribute(".photo .box", "class").split()[-1] == verdict
        box = page.locator(".photo .box").bounding_box()
        frame = page.locator(".photo .frame img").bounding_box()
        assert 0 < box["width"] < frame["width"] / 2  # a face-sized box inside the photo
        # the heat map is a loaded image
        heat = page.locator(".heatmap")
        assert heat.count() == 1
        assert page.evaluate("document.querySelector('.heatmap').naturalWidth") == 64
        # the text file's error names it, in the page and in the table
        error = page.inner_text(".photo .error")
        assert "notes.txt" in error and "not an image" in error
        cells = page.locator("#results-table tbody tr").all_inner_texts()
        assert len(cells) == 2 and any("notes.txt" in c for c in cells)
        with page.expect_download() as download:
            page.click("#download")
        csv = Path(download.value.path()).read_text()
        assert csv.startswith('"file","face"') and "astronaut.jpg" in csv
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000

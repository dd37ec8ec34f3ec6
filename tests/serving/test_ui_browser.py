"""The web UI in a real browser: Playwright driving Debian's chromium (no download), offline."""
from __future__ import annotations

import json
import shutil

import httpx
import pytest
from serve_helpers import SMALL
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install --no-install-recommends chromium)",
                allow_module_level=True)
# No lookups outside this machine: every name resolves to nothing except the local server.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


@pytest.mark.slow
def test_portraits_tab_end_to_end(serve, astronaut_path, faceless_png, astronaut_bytes, tmp_path):
    expect = sync_api.expect
    url, jobs = serve(ui=True, queue_size=1)
    faceless = tmp_path / "wall.png"
    faceless.write_bytes(faceless_png)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(accept_downloads=True)
        page.goto(url + "/")  # redirects to /ui/
        page.locator("#photos input[type=file]").set_input_files(astronaut_path)
        expect(page.locator("#face_notes")).to_contain_text("photo 1: face found", timeout=30000)
        expect(page.locator("#face_check img")).to_have_count(1)
        set_number(page, "n_images", 3)
        page.get_by_text("Advanced").click()
        for elem_id, value in (("steps", SMALL["steps"]), ("width", 64), ("height", 64)):
            set_number(page, elem_id, value)
        page.locator("#generate").click()
        expect(page.locator("#gallery img")).to_have_count(3, timeout=60000)
        seeds = [int(s) for s in page.locator("#used_seed textarea, #used_seed input").first.input_value().split(",")]
        assert len(seeds) == 3 and seeds[1] == seeds[0] + 1
        with page.expect_download() as download:
            page.locator("#downloads a").first.click()
        with Image.open(download.value.path()) as image:
            assert image.size == (64, 64)
            meta = json.loads(image.info["facefact"])
        assert meta["seed"] == seeds[0] and meta["ai_generated"] is True and "trainedAlgorithmicMedia" in \
            image.info["XML:com.adobe.xmp"]

        # the queue is shared with the API: full -> "busy, try again" in the page
        jobs.pause()
        assert httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", astronaut_bytes, "image/jpeg"))],
                          data={"settings": json.dumps(SMALL)}).status_code == 202
        page.locator("#generate").click()
        expect(page.get_by_text("Busy, try again")).to_be_visible(timeout=20000)
        jobs.resume()

        # a second photo without a face: the face check says so, and generating shows the library's words
        page.locator("#photos input[type=file]").set_input_files(str(faceless))
        expect(page.locator("#face_notes")).to_contain_text("photo 2: not usable - no face found", timeout=30000)
        page.locator("#generate").click()
        expect(page.get_by_text("photo 2: no face found").last).to_be_visible(timeout=20000)
        assert "Traceback" not in page.content()
        browser.close()


@pytest.mark.slow
def test_template_tab_end_to_end(serve, grace_hopper_path, astronaut_path, faceless_png, tmp_path):
    """Group photo -> its two faces numbered -> a new person for each -> generate -> images, download,
    metadata. FACEFACT_SCREENSHOTS=DIR writes the page as DIR/serve-template.png (the docs' screenshot)."""
    import os

    import numpy as np
    from skimage import data

    expect = sync_api.expect
    url, jobs = serve(ui=True, queue_size=1)
    left = np.ascontiguousarray(data.astronaut())  # the astronaut (left) and Grace Hopper (right)
    with Image.open(grace_hopper_path) as right:
        right = np.asarray(right.convert("RGB").resize((round(right.width * 512 / right.height), 512)))
    template = tmp_path / "group.png"
    Image.fromarray(np.concatenate([left, right], axis=1)).save(template)
    faceless = tmp_path / "wall.png"
    faceless.write_bytes(faceless_png)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 1100})
        page.goto(url + "/ui/")
        page.get_by_role("tab", name="Template").click()
        # a template without a face: the library's words, no traceback
        page.locator("#template input[type=file]").set_input_files(str(faceless))
        expect(page.locator("#template_notes")).to_contain_text("no face found in the template", timeout=30000)
        page.locator("#template button[aria-label='Clear']").first.click()
        page.locator("#template input[type=file]").set_input_files(str(template))
        notes = page.locator("#template_notes")
        expect(notes).to_contain_text("2 faces found", timeout=30000)
        expect(notes).to_contain_text("face 2:")
        expect(page.locator("#template_faces img")).to_have_count(1)
        # person 1 -> the default target (face 2, the largest: Grace Hopper); person 2 -> face 1
        expect(page.locator("#target_1 input")).to_have_value("2")
        page.locator("#person_1 input[type=file]").set_input_files(astronaut_path)
        page.get_by_text("Second person (optional)").click()
        page.locator("#target_2 input").click()
        page.get_by_role("option", name="1", exact=True).click()
        page.locator("#person_2 input[type=file]").set_input_files(grace_hopper_path)
        set_number(page, "t_strength", 1.0)
        set_number(page, "t_n_images", 2)
        page.locator("#t_randomize input[type=checkbox]").uncheck()
        set_number(page, "t_seed", 9)
        page.locator("#t_advanced").get_by_text("Advanced").click()
        set_number(page, "t_steps", 2)
        set_number(page, "t_crop", 64)
        page.locator("#t_refine input[type=checkbox]").uncheck()
        page.locator("#template_generate").click()
        expect(page.locator("#template_gallery img")).to_have_count(2, timeout=90000)
        assert page.locator("#template_seed textarea, #template_seed input").first.input_value() == "9, 10"
        with page.expect_download() as download:
            page.locator("#template_downloads a").first.click()
        with Image.open(download.value.path()) as image:
            assert image.size == (left.shape[1] + right.shape[1], 512)  # the template's own size
            meta = json.loads(image.info["facefact"])
        assert meta["mode"] == "template" and meta["seed"] == 9 and meta["ai_generated"] is True
        assert [face["number"] for face in meta["redrawn_faces"]] == [2, 1]
        assert [face["reference_photos"] for face in meta["redrawn_faces"]] == [1, 1]
        if os.environ.get("FACEFACT_SCREENSHOTS"):
            page.screenshot(path=os.path.join(os.environ["FACEFACT_SCREENSHOTS"], "serve-template.png"), full_page=True)

        # the queue is shared with the API's portrait jobs: full -> "busy, try again"
        jobs.pause()
        assert httpx.post(url + "/v1/jobs", files=[("photos", ("a.jpg", open(astronaut_path, "rb").read(),
                                                               "image/jpeg"))],
                          data={"settings": json.dumps(SMALL)}).status_code == 202
        page.locator("#template_generate").click()
        expect(page.get_by_text("Busy, try again")).to_be_visible(timeout=20000)
        jobs.resume()
        assert "Traceback" not in page.content()
        browser.close()


def test_api_docs_render_with_the_network_blocked(serve):
    """/docs (where every API error hint points) draws its operations from this machine alone: Swagger
    UI's script and styles are served locally, not from a CDN the resolver rules make unreachable."""
    expect = sync_api.expect
    url, _ = serve()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page()
        requested, failed = [], []
        page.on("request", lambda request: requested.append(request.url))
        page.on("requestfailed", lambda request: failed.append(request.url))
        page.goto(url + "/docs")
        expect(page.locator(".opblock-summary-path", has_text="/v1/jobs").first).to_be_visible(timeout=30000)
        expect(page.locator(".opblock-summary-path", has_text="/v1/template/faces").first).to_be_visible()
        assert page.locator(".opblock").count() >= 10  # every operation of the API is listed
        browser.close()
    assert not failed and all(u.startswith(url) for u in requested), (failed, requested)

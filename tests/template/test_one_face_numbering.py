"""One face numbering everywhere: the group photo's face N is the same face in `faces inspect`,
`generate --face PHOTO#N`, `template`, the server's API and the UI's Template tab.

The group photo (tests/conftest.py) has the astronaut on the left with the smaller face and Grace
Hopper on the right with the larger: counting from the largest would swap the numbers.
"""
from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from facefact.pipelines.metadata import read_png_metadata


@pytest.fixture(scope="module")
def inspected(group_path):
    """{number: (x1, y1, width, height)} as `facefact faces inspect --json` reports them."""
    from facefact.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["faces", "inspect", group_path, "--json"]) == 0
    photo = json.loads(out.getvalue())["photos"][0]
    assert photo["main_face"] == 2  # the largest, Grace Hopper, is on the right
    return {f["number"]: (f["bbox"][0], f["bbox"][1], f["bbox"][2] - f["bbox"][0], f["bbox"][3] - f["bbox"][1])
            for f in photo["faces"]}


def test_faces_inspect_numbers_from_the_left(inspected, group):
    assert sorted(inspected) == [1, 2]
    assert inspected[1][0] < group.shape[1] / 2 <= inspected[2][0]  # face 1 the astronaut, on the left
    assert inspected[1][2] * inspected[1][3] < inspected[2][2] * inspected[2][3]  # ... and the smaller


@pytest.mark.parametrize("number", [1, 2])
def test_generate_uses_the_same_face(cli, group_path, inspected, tmp_path, number):
    code, out, err = cli("generate", "--model", "tiny", "--face", f"{group_path}#{number}", "--prompt", "a portrait",
                         "-n", 1, "--seed", 3, "--steps", 1, "--size", 64, "--out", tmp_path, "--json")
    assert code == 0, err
    notes = " ".join(read_png_metadata(json.loads(out)["images"][0])["notes"])
    x1, y1, w, h = inspected[number]
    assert f"face {number} of 2 chosen, counting from the left ({w:.0f}x{h:.0f} px at ({x1:.0f}, {y1:.0f}))" \
        in notes, notes


def test_template_redraws_the_same_face(cli, photo_files, group_path, inspected, tmp_path):
    code, out, err = cli("template", "--template", group_path, "--face", photo_files["grace"], "--target", "1",
                         "--model", "tiny", "--crop-size", "64", "--steps", "4", "--prompt", "a portrait",
                         "--no-refine", "--out", tmp_path, "--json", "--quiet")
    assert code == 0, err
    redrawn = read_png_metadata(json.loads(out)["images"][0])["redrawn_faces"]
    assert [face["number"] for face in redrawn] == [1]
    assert redrawn[0]["bbox"][:2] == pytest.approx(inspected[1][:2], abs=0.1)


def test_the_api_and_the_ui_number_the_same_faces(group_path, inspected):
    pytest.importorskip("gradio")
    from fastapi.testclient import TestClient

    from facefact.serving.api import ServerConfig, create_app
    from facefact.serving.photos import FaceChecker
    from facefact.serving.ui_template import faces_view

    checker = FaceChecker()
    with open(group_path, "rb") as photo, TestClient(create_app(None, checker, ServerConfig(ui=False))) as client:
        answer = client.post("/v1/template/faces", files=[("template", ("g.png", photo, "image/png"))])
    assert answer.status_code == 200, answer.text
    for face in answer.json()["faces"]:
        assert face["bbox"][:2] == pytest.approx(inspected[face["number"]][:2], abs=0.1)
    assert answer.json()["default_target"] == 2

    _, text, first_choices, _ = faces_view(checker, group_path, ServerConfig().max_photo_pixels)
    listed = {int(n): (int(w), int(h)) for n, w, h in re.findall(r"face (\d+): (\d+)x(\d+) px", text)}
    assert listed == {n: (round(box[2]), round(box[3])) for n, box in inspected.items()}
    assert first_choices["value"] == "2"  # the default target, the largest

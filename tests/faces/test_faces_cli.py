"""`facefact faces inspect`: tables, JSON, debug images, clear errors and exit codes."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facefact.cli.main import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, grace_hopper_path):
    folder = tmp_path_factory.mktemp("photos")
    ast = folder / "astronaut.png"
    cv2.imwrite(str(ast), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    flipped = folder / "astronaut_flip.jpg"
    cv2.imwrite(str(flipped), cv2.cvtColor(np.ascontiguousarray(astronaut[:, ::-1]), cv2.COLOR_RGB2BGR))
    return [str(ast), str(flipped), grace_hopper_path]


def test_inspect_json_matrix(photos, capsys):
    assert main(["faces", "inspect", *photos, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["analysis"]["embedder"] == "sface"
    sim = np.array(report["similarity"]["cosine"])
    threshold = report["similarity"]["threshold"]
    assert sim.shape == (3, 3) and sim[0, 1] > threshold and sim[0, 2] < threshold
    assert report["photos"][0]["faces"][0]["quality"]["size_px"] > 80


def test_inspect_tables_debug_dir_dlib(photos, tmp_path, capsys):
    assert main(["faces", "inspect", photos[0], photos[2], "--debug-dir", str(tmp_path), "--embedder", "dlib"]) == 0
    out = capsys.readouterr().out
    assert "embedder dlib" in out and "identity cosine similarity" in out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "00_astronaut_overlay.png" in names and "01_grace_hopper_fact_condition.png" in names
    assert cv2.imread(str(tmp_path / "00_astronaut_aligned.png")).shape == (112, 112, 3)


def test_inspect_reports_bad_photos_without_traceback(photos, tmp_path, capsys):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((64, 64, 3), np.uint8))
    assert main(["faces", "inspect", photos[0], str(empty), str(blank)]) == 3  # ExitCode.PROBLEM_FOUND
    out = capsys.readouterr().out
    assert "empty.jpg: the file is empty" in out and "blank.png: no face found" in out
    assert "hint:" in out and "Traceback" not in out


def test_inspect_strict_refuses_two_faces(astronaut, tmp_path, capsys):
    pair = tmp_path / "pair.png"
    cv2.imwrite(str(pair), cv2.cvtColor(np.concatenate([astronaut, astronaut], axis=1), cv2.COLOR_RGB2BGR))
    assert main(["faces", "inspect", str(pair), "--json"]) == 0
    assert "2 faces found" in json.loads(capsys.readouterr().out)["photos"][0]["notes"][0]
    assert main(["faces", "inspect", str(pair), "--strict", "--json"]) == 3  # ExitCode.PROBLEM_FOUND
    assert "exactly one" in json.loads(capsys.readouterr().out)["photos"][0]["problems"][0]["error"]

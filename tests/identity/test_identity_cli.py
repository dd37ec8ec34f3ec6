"""The identity controls through the CLI: regions, window, per-level scale, saved identities."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facefact.cli.main import main
from facefact.pipelines.metadata import read_png_metadata

COMMON = ["--model", "tiny", "--prompt", "a portrait", "--steps", "2", "--size", "64", "--seed", "4", "--quiet"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, grace_hopper):
    folder = tmp_path_factory.mktemp("photos")
    astronaut.save(folder / "alice.jpg")
    grace_hopper.save(folder / "grace.jpg")
    return str(folder / "alice.jpg"), str(folder / "grace.jpg")


def generated(out):
    (path,) = sorted(p for p in out.glob("*.png") if "sheet" not in p.name)
    return np.asarray(Image.open(path)), read_png_metadata(path)


def test_saved_identity_gives_the_photos_pixels(tmp_path, photos, capsys):
    alice, grace = photos
    assert main(["identity", "save", "--model", "tiny", "--face", alice, "--face", grace, "--combine", "weighted",
                 "-o", str(tmp_path / "alice.fid")]) == 0
    assert main(["identity", "show", str(tmp_path / "alice.fid")]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["combine"] == "weighted" and shown["num_photos"] == 2 and "alice" not in json.dumps(shown)
    assert main(["generate", *COMMON, "--face", alice, "--face", grace, "--combine", "weighted",
                 "--out", str(tmp_path / "photos")]) == 0
    assert main(["generate", *COMMON, "--identity", str(tmp_path / "alice.fid"), "--out", str(tmp_path / "fid")]) == 0
    (from_photos, meta), (from_file, _) = generated(tmp_path / "photos"), generated(tmp_path / "fid")
    assert np.array_equal(from_photos, from_file) and meta["face_combine"] == "weighted"
    # refused where it does not belong: an existing name, another suffix
    assert main(["identity", "save", "--model", "tiny", "--face", alice, "-o", str(tmp_path / "alice.fid")]) == 2
    assert main(["identity", "save", "--model", "tiny", "--face", alice, "-o", str(tmp_path / "a.npz")]) == 2


def test_two_people_window_and_levels_reach_the_metadata(tmp_path, photos):
    alice, grace = photos
    assert main(["generate", *COMMON, "--face", f"{alice}@0,0,0.5,1", "--face", f"{grace}@0.5,0,1,1",
                 "--window", "0.3,1", "--scale", "down=0.3,up=0.6", "--out", str(tmp_path)]) == 0
    _, meta = generated(tmp_path)
    assert meta["face_regions"] == [[0, 0, 0.5, 1], [0.5, 0, 1, 1]] and meta["fact_window"] == [0.3, 1.0]
    assert meta["fact_scale"] == {"down": 0.3, "up": 0.6} and meta["num_reference_photos"] == 2
    assert not any("alice" in note or "grace" in note for note in meta["notes"])


@pytest.mark.parametrize("extra,phrase", [
    (["--face", "A@0,0,0.6,1", "--face", "G@0.5,0,1,1"], "overlap"),
    (["--face", "A@0,0,0.5,1", "--face", "G"], "some references have a region"),
    (["--face", "A@0,0,1.5,1"], r"outside \[0, 1\]"),
    (["--face", "A", "--window", "0.8,0.2"], "--window 0.8,0.2"),
    (["--face", "A", "--scale", "up=x"], "--scale up=x"),
    (["--face", "A", "--scale", "sideways=0.5"], "level .sideways. is not a UNet level"),
    ([], "no reference given"),
])
def test_bad_identity_flags_are_clear_errors(tmp_path, photos, capsys, extra, phrase):
    alice, grace = photos
    extra = [e.replace("A", alice, 1) if e.startswith("A") else e.replace("G", grace, 1) if e.startswith("G") else e
             for e in extra]
    try:  # a flag's own syntax is argparse's to refuse (it exits 2); the rest comes back as exit code 2
        code = main(["generate", *COMMON, *extra, "--out", str(tmp_path)])
    except SystemExit as exited:
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and __import__("re").search(phrase, err), err
    assert not list(tmp_path.glob("*.png"))

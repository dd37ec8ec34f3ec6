"""`facefact prepare` says when a person's photos do not look like one person, and names near-duplicates."""
from __future__ import annotations

import json
import shutil

from facefact.cli.main import main


def test_a_mislabelled_person_and_a_duplicate_are_reported(tmp_path, photo_folder, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(photo_folder, photos)
    # a photo of Grace Hopper filed under the astronaut, and one astronaut photo twice
    shutil.copyfile(photos / "hopper" / "0.jpg", photos / "astronaut" / "9.jpg")
    shutil.copyfile(photos / "astronaut" / "1.jpg", photos / "astronaut" / "1b.jpg")
    assert main(["prepare", str(photos), "--out", str(tmp_path / "set"), "--size", "128", "--quiet"]) == 0
    captured = capsys.readouterr()
    checks = json.loads(captured.out)["identity_checks"]
    outliers = [c for c in checks if c["kind"] == "outlier"]
    assert [c["identity"] for c in outliers] == ["astronaut"] and outliers[0]["photos"][0].endswith("9.jpg")
    duplicates = [c for c in checks if c["kind"] == "near_duplicate"]
    assert any(sorted(p.rsplit("/", 1)[1] for p in c["photos"]) == ["1.jpg", "1b.jpg"] for c in duplicates)
    assert "may show someone else" in captured.err and "near-duplicate" in captured.err
    assert not [c for c in outliers if c["identity"] == "hopper"]  # (its photos are jittered copies: duplicates)
    # nothing of the embeddings is written
    assert "embedding" not in (tmp_path / "set" / "dataset.json").read_text()

"""Atomic writes (facefact.atomic) and their users here: the checksum manifest and the PNG outputs."""
from __future__ import annotations

import os
import stat

import pytest
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    from facefact.atomic import atomic_path, atomic_write_bytes

    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"second")
    assert target.read_bytes() == b"second" and sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_manifest_write_that_fails_leaves_no_temporary_and_the_old_manifest(tmp_path):
    from facefact.pipelines.registry import read_manifest, record_checksum

    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    record_checksum(tmp_path, model, "ab" * 32, "check")
    before = read_manifest(tmp_path)
    with pytest.raises(TypeError):
        record_checksum(tmp_path, model, "cd" * 32, object())  # not JSON-serialisable
    assert read_manifest(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.bin"]


def test_png_that_fails_to_encode_leaves_nothing(tmp_path):
    from facefact.pipelines.metadata import write_png

    with pytest.raises(Exception):
        write_png(Image.new("RGB", (8, 8)), tmp_path / "out.png", {"bad": object()})
    assert list(tmp_path.iterdir()) == []
    written = write_png(Image.new("RGB", (8, 8)), tmp_path / "out.png", {"seed": 1})
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]

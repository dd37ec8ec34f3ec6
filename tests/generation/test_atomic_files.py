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


FULL_DISK_WRITERS = """
import errno, os, resource, signal, sys
import torch
from PIL import Image
from facefact.atomic import atomic_write_bytes
from facefact.model.checkpoints import atomic_save_safetensors, atomic_save_torch
from facefact.pipelines.metadata import write_png

folder = sys.argv[1]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # no file may grow past 4 KB: the disk is "full"
big = torch.zeros(10_000)
writers = {
    "a.safetensors": lambda p: atomic_save_safetensors({"w": big}, p, {}),
    "state.pt": lambda p: atomic_save_torch({"w": big}, p),
    "b.png": lambda p: write_png(Image.effect_noise((64, 64), 50).convert("RGB"), p, {}),
    "c.json": lambda p: atomic_write_bytes(p, b"x" * 10_000),
}
for name, write in writers.items():
    path = os.path.join(folder, name)
    try:
        write(path)
        print(name, "written")
    except OSError as err:
        print(name, errno.errorcode.get(err.errno), err.filename == path)
"""


def test_a_full_disk_is_an_os_error_naming_the_file_for_every_writer(tmp_path):
    """safetensors and torch.save report a failed write as their own errors (SafetensorError, a
    RuntimeError "unexpected pos"), Pillow and Python's write() without the file: each becomes an
    OSError naming the file (the CLI's disk-full message), and no temporary is left."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FULL_DISK_WRITERS, str(tmp_path)], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split("\n")[:4] == [f"{name} EFBIG True" for name in
                                           ("a.safetensors", "state.pt", "b.png", "c.json")], done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_right_after_the_temporary_appears_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM (KeyboardInterrupt) lands between bytecodes, so also just after the temporary
    file is made and before its writer holds it: an empty temporary was left there (seen when `prepare
    --ray` was stopped mid-run), which a resumed run then kept beside the finished files."""
    import facefact.atomic as atomic

    real_close = os.close

    def close_then_interrupted(fd):
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "close", close_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(tmp_path / "sample.txt", b"caption")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []

"""Provenance hashes are read once per unchanged file, recomputed when it changes, and a missing,
damaged or unwritable cache only costs a re-read."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from facefact.pipelines import hashing
from facefact.pipelines.hashing import HashCache
from facefact.pipelines.loading import describe_file


@pytest.fixture
def reads(monkeypatch):
    """Every time the bytes of some files are hashed: the list of their names."""
    calls = []
    real = hashing.files_sha256

    def counting(paths, chunk=1 << 20):
        calls.append([p.name for p in paths])
        return real(paths, chunk)

    monkeypatch.setattr(hashing, "files_sha256", counting)
    return calls


def test_an_unchanged_file_is_read_once(tmp_path, reads):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights" * 1000)
    cache = HashCache(tmp_path / "cache" / "hashes.json")
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    assert cache.files_sha256([model]) == expected
    assert HashCache(tmp_path / "cache" / "hashes.json").files_sha256([model]) == expected  # a later run
    assert reads == [["model.safetensors"]]
    assert describe_file(model, cache)["sha256"] == expected[:16] and len(reads) == 1


def test_a_changed_file_is_read_again(tmp_path, reads):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"a" * 100)
    cache = HashCache(tmp_path / "hashes.json")
    first = cache.files_sha256([model])
    model.write_bytes(b"b" * 100)  # same size; the modification time moves
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.files_sha256([model]) == hashlib.sha256(b"b" * 100).hexdigest() != first
    assert len(reads) == 2


@pytest.mark.parametrize("how", ["in place (cp -p)", "new file renamed over it (rsync -a)"])
def test_another_file_of_the_same_size_and_time_is_read_again(tmp_path, reads, how):
    """cp -p and rsync -a restore the old modification time: size and mtime alone would keep the old
    hash for a different file. The inode and the change time (which no copy can set) tell."""
    import time

    model = tmp_path / "model.safetensors"
    model.write_bytes(b"a" * 100)
    old = model.stat()
    cache = HashCache(tmp_path / "hashes.json")
    first = cache.files_sha256([model])
    time.sleep(0.05)  # past the file system's timestamp granularity, so the change time moves
    if how.startswith("in place"):
        model.write_bytes(b"b" * 100)
    else:
        (tmp_path / "incoming").write_bytes(b"b" * 100)
        os.replace(tmp_path / "incoming", model)
    os.utime(model, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = model.stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert cache.files_sha256([model]) == hashlib.sha256(b"b" * 100).hexdigest() != first
    assert len(reads) == 2


def test_each_file_is_statted_once(tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    models = [tmp_path / f"part{i}.safetensors" for i in range(3)]
    for model in models:
        model.write_bytes(b"x")
    calls = []
    real = Path.stat

    def counting(self, *args, **kwargs):
        if self.name.startswith("part") and sys._getframe(1).f_code.co_filename == hashing.__file__:
            calls.append(self.name)  # the signature's stat() calls (not Path.resolve's own)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", counting)
    HashCache(tmp_path / "hashes.json").files_sha256(models)
    assert sorted(calls) == ["part0.safetensors", "part1.safetensors", "part2.safetensors"]


def test_a_damaged_cache_is_replaced(tmp_path, reads):
    model = tmp_path / "model.bin"
    model.write_bytes(b"x")
    path = tmp_path / "hashes.json"
    path.write_text("{not json")
    assert HashCache(path).files_sha256([model]) == hashlib.sha256(b"x").hexdigest()
    assert str(model.resolve()) in json.loads(path.read_text())


def test_off_writes_nothing_and_reads_every_time(tmp_path, reads, monkeypatch):
    monkeypatch.setenv("FACEFACT_HASH_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = tmp_path / "model.bin"
    model.write_bytes(b"x")
    cache = HashCache.default()
    assert cache.path is None
    cache.files_sha256([model])
    cache.files_sha256([model])
    assert len(reads) == 2 and not (tmp_path / "xdg").exists()


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("FACEFACT_HASH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert HashCache.default().path == tmp_path / "facefact" / "hashes.json"


def test_an_unwritable_cache_never_fails_a_run(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # mkdir fails, even for root
    model = tmp_path / "model.bin"
    model.write_bytes(b"x")
    assert HashCache(blocker / "hashes.json").files_sha256([model]) == hashlib.sha256(b"x").hexdigest()

"""sha256 of model files: for download checks, and for the provenance in every image's metadata.

Provenance hashes are needed on every `facefact generate`, and a real base model is several GB
(~2-3 s of reading per GB-scale file, every run). `HashCache` remembers them in a small JSON file
keyed by each file's resolved path, size, modification time, inode and change time (a file copied
in with its old time kept, by cp -p or rsync -a, still has a new change time), so a model is read
once, not once per run. Checks that exist to catch a changed or damaged file (`facefact
models`, downloads) call `file_sha256` and always read the bytes.

The cache lives at `$XDG_CACHE_HOME/facefact/hashes.json` (default `~/.cache/...`);
`FACEFACT_HASH_CACHE=PATH` moves it, `FACEFACT_HASH_CACHE=off` turns it off. It holds paths and
hashes of model files only - never photos or anything about a person.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from facefact.atomic import atomic_write_bytes

_MAX_ENTRIES = 512  # a few hundred model files; oldest dropped first


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    return files_sha256([Path(path)], chunk)


def files_sha256(paths: list[Path], chunk: int = 1 << 20) -> str:
    """sha256 over the bytes of `paths`, one after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


class HashCache:
    """`files_sha256` that reads each unchanged set of files once. `HashCache(None)` never caches."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path).expanduser() if path else None

    @classmethod
    def default(cls) -> "HashCache":
        setting = os.environ.get("FACEFACT_HASH_CACHE")
        if setting is not None:
            return cls(None if setting.strip().lower() in ("", "0", "off", "false", "no") else setting)
        return cls(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "facefact" / "hashes.json")

    def files_sha256(self, paths: list[Path]) -> str:
        if self.path is None:
            return files_sha256(paths)
        resolved = [Path(p).resolve() for p in paths]
        key = "\n".join(str(p) for p in resolved)
        # Size and modification time alone miss another file restored with the old time (cp -p,
        # rsync -a): the inode and the change time, which no copy can set, tell it apart.
        signature = [[st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns] for st in (p.stat() for p in resolved)]
        entries = self._read()
        entry = entries.get(key)
        if isinstance(entry, dict) and entry.get("files") == signature and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = files_sha256(resolved)
        entries.pop(key, None)
        entries[key] = {"files": signature, "sha256": digest}  # newest last: trimming drops the oldest
        self._write(dict(list(entries.items())[-_MAX_ENTRIES:]))
        return digest

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, unreadable or damaged: start afresh
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, entries: dict) -> None:
        # Best effort: a read-only or full cache folder costs a re-read next time, never a failed run.
        with contextlib.suppress(OSError):
            atomic_write_bytes(self.path, json.dumps(entries, indent=0).encode())

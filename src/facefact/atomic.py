"""Atomic file writes: a temporary file beside the target, renamed over it only on success.

    with atomic_path("model.safetensors") as tmp:   # any writer that takes a path
        save_file(tensors, tmp)
    atomic_write_bytes("manifest.json", data)        # bytes already in memory

Readers never see a half-written file, a failed write leaves the old file (or none) and no
temporary behind, and the result has the user's usual permissions (mkstemp's would be 0600).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def temporary_sibling(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A new empty temporary file in `path`'s folder (created if needed), with normal permissions
    (the process's umask applies, as for any new file); removed on exit unless the caller moved it
    away (os.replace / os.link + rename).

    The name is chosen before the file is made, so an interrupt (Ctrl-C, SIGTERM as KeyboardInterrupt)
    that lands right after the file appears still knows what to remove: mkstemp's own window between
    creating the file and returning its name left empty temporaries behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue  # another writer's name: never ours to remove
        except BaseException:  # interrupted, maybe after the file appeared (an OSError made no file)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        break
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    with temporary_sibling(path, suffix) as tmp:
        yield tmp
        os.replace(tmp, path)


@contextlib.contextmanager
def naming_failed_writes(path: str | Path) -> Iterator[None]:
    """An OSError of a writer that does not say which file it was writing (Pillow's `save` on a full
    disk: "[Errno 28] No space left on device") is raised again naming `path`."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, naming_failed_writes(path):
        with open(tmp, "wb") as handle:
            handle.write(data)


# temporary_sibling's names: "." + target name + "." + 8 random hex characters + suffix.
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.tmp$")
STALE_AFTER_S = 120  # a live writer touches its temporary continuously; two idle minutes = left behind


def sweep_stale_temporaries(folder: str | Path, older_than_s: float = STALE_AFTER_S, *,
                            recursive: bool = False) -> list[Path]:
    """Remove temporaries of our own naming that a killed run (SIGKILL, power loss) left in `folder`
    (and its sub-folders when `recursive`); only regular files whose last change is `older_than_s`
    ago, never anything else."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if recursive and entry.is_dir(follow_symlinks=False):
            removed += sweep_stale_temporaries(entry.path, older_than_s, recursive=True)
            continue
        if not _TEMPORARY_NAME.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if entry.is_file(follow_symlinks=False) and now - info.st_mtime > older_than_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed

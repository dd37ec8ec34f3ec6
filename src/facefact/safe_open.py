"""Open user-given files safely: regular files only, never blocking, each other kind named.

Every file a user hands facefact (photos, checkpoints, data-set entries, prompt and config files)
goes through here before it is read. A FIFO given as a photo would otherwise block the process
forever, ``/dev/zero`` reports a size of 0 and would be called "empty" (or be read endlessly), and
a symlink loop would be reported as "not found". Here each of them is refused up front, naming
what the path really is.

    kind = special_file_kind(path)          # None for a regular file, else "a FIFO (named pipe)", ...
    require_regular_file(path, CheckpointError, hint="...")   # raises error_cls naming the kind
    with open_regular(path) as handle: ...  # opened O_NONBLOCK, re-checked with fstat, then blocking
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from facefact.errors import FacefactError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device file (character device)"),
    (stat.S_ISBLK, "a device file (block device)"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of_mode(mode: int) -> str | None:
    """None for a regular file, else what the file is, in words."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class NotARegularFile(FacefactError):
    """Raised by :func:`open_regular` when no error class is given."""


def special_file_kind(path: str | Path) -> str | None:
    """What `path` is if it is not a readable regular file ("a symlink loop", "a FIFO (named pipe)",
    "missing", ...), None for a regular file. Never opens the file (a FIFO cannot block here)."""
    try:
        return kind_of_mode(os.stat(path).st_mode)
    except OSError as err:
        return _stat_error_words(err)


def _stat_error_words(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "a symlink loop (a link that points back to itself)"
    if err.errno == errno.ENOENT:
        return "missing" if not os.path.islink(err.filename or "") else "a broken symlink (its target is missing)"
    if err.errno == errno.ENAMETOOLONG:
        return "a path longer than the file system allows"
    if err.errno == errno.EACCES:
        return "not accessible (permission denied)"
    if err.errno == errno.ENOTDIR:
        return "missing (a part of the path is a file, not a folder)"
    return f"unreadable ({err.strerror})"


def require_regular_file(path: str | Path, error_cls: type[FacefactError] = NotARegularFile, *,
                         hint: str | None = None, missing_cls: type[FacefactError] | None = None) -> os.stat_result:
    """The file's stat if `path` is a regular file; else raise `error_cls` (`missing_cls` for a
    path that does not exist) naming what it is."""
    try:
        info = os.stat(path)
    except OSError as err:
        words = _stat_error_words(err)
        cls = (missing_cls or error_cls) if words == "missing" else error_cls
        message = "file not found" if words == "missing" else f"the path is {words}"
        raise cls(message, path=path, hint=hint or "check the path and spelling") from None
    kind = kind_of_mode(info.st_mode)
    if kind is not None:
        raise error_cls(f"is {kind}, not a regular file", path=path,
                        hint=hint or "pass the path of an ordinary file")
    return info


def open_regular(path: str | Path, error_cls: type[FacefactError] = NotARegularFile, *,
                 hint: str | None = None, missing_cls: type[FacefactError] | None = None) -> BinaryIO:
    """Open `path` for binary reading only if it is a regular file. The open itself is non-blocking
    (a FIFO swapped in after the check cannot hang it) and the opened file is checked again."""
    require_regular_file(path, error_cls, hint=hint, missing_cls=missing_cls)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise error_cls(f"cannot read the file ({err.strerror})", path=path,
                        hint=hint or "check the file permissions") from None
    try:
        kind = kind_of_mode(os.fstat(fd).st_mode)
        if kind is not None:
            raise error_cls(f"is {kind}, not a regular file", path=path, hint=hint or "pass an ordinary file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text_file(path: str | Path, error_cls: type[FacefactError] = NotARegularFile, *, what: str = "text file",
                   max_bytes: int = 16 * 1024 * 1024, hint: str | None = None) -> str:
    """A small UTF-8 text file (config, prompt list, sidecar caption) read safely: regular file,
    bounded size, no binary data, clear errors."""
    with open_regular(path, error_cls, hint=hint) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error_cls(f"the {what} is larger than {max_bytes // (1024 * 1024)} MB; that is not a {what}",
                        path=path, hint=hint)
    if b"\x00" in data:
        raise error_cls(f"is a binary file, not a {what}", path=path, hint=hint or f"pass a UTF-8 {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error_cls(f"the {what} is not valid UTF-8 text (byte {err.start})", path=path,
                        hint=hint or "save it as UTF-8") from None

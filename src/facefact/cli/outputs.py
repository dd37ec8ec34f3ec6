"""Output folders and files checked before any work: a command that would fail at its first
write (a file where the folder should be, a read-only folder, a name over the file-system limit)
fails up front instead, naming the flag. Stale temporaries of facefact's own naming that a killed
run left behind are swept at the same time (facefact.atomic.sweep_stale_temporaries)."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from facefact.errors import ConfigError


_OS_ERROR_WORDS = {
    errno.ENOSPC: ("no space left on the device", "free some disk space, or write to another disk"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space, or write to another disk"),
    errno.EROFS: ("the file system is read-only", "choose an --out folder you can write to"),
    errno.EACCES: ("permission denied", "choose an --out folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose an --out folder you can write to, or fix its permissions"),
    errno.ENAMETOOLONG: ("a file name is longer than the file system allows", "use a shorter --name or --out"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "give a folder (or a new name) where one is asked for"),
    errno.EEXIST: ("a file is in the way of a folder", "give a folder (or a new name) where one is asked for"),
    errno.EISDIR: ("a folder is in the way of a file", "remove or rename that folder"),
    errno.EFBIG: ("the file is too large for the file system", "write to another file system"),
    errno.EIO: ("an input/output error (a failing disk or a lost network mount)", "check the disk"),
}


def os_error_words(err: OSError) -> str | None:
    """The words for a file-system failure that is the machine's or the user's, not a bug; None otherwise."""
    known = _OS_ERROR_WORDS.get(err.errno)
    if known is None:
        return None
    what, hint = known
    where = f" ({err.filename})" if err.filename else ""
    return f"cannot write or read{where}: {what}\n  hint: {hint}"


def _os_words(err: OSError) -> str:
    return os_error_words(err) or f"cannot write there ({err.strerror})"


def _probe_writable(existing: Path, flag: str, requested: Path) -> None:
    """Create and remove a file in `existing` (the folder itself, or its nearest existing parent):
    permission bits alone do not tell (root, read-only mounts, ACLs)."""
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".facefact-write-check."):
            pass
    except OSError as err:
        where = "" if existing == requested else f" (in {existing})"
        what, hint = _OS_ERROR_WORDS.get(err.errno, (err.strerror, "choose another folder"))
        raise ConfigError(f"{flag} {requested}: files cannot be created there{where}: {what}", path=requested,
                          hint=hint.replace("--out", flag)) from err


def prepare_output_folder(path: str | Path, flag: str = "--out", *, create: bool = False,
                          sweep: bool = True, recursive: bool = False) -> Path:
    """Check that files can be written into folder `path`: it is a folder (or can be made one:
    its nearest existing parent is a writable folder). `create` makes it now; otherwise it is left
    to the first write, so a command refused later leaves no empty folder behind."""
    from facefact.atomic import sweep_stale_temporaries

    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} {folder} is a file, not a folder", path=folder,
                          hint=f"give {flag} a folder (it is created if missing)")
    check_file_name(folder.parent, folder.name, flag)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag} {folder}: {existing} is a file, not a folder", path=folder,
                          hint=f"give {flag} a folder (it is created if missing)")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{flag} {folder}: {_os_words(err)}", path=folder) from err
        existing = folder
    _probe_writable(existing, flag, folder)
    if sweep and folder.is_dir():
        sweep_stale_temporaries(folder, recursive=recursive)
    return folder


def check_file_name(folder: Path, name: str, flag: str) -> None:
    """A file `name` fits the file system's name limit in `folder`."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    if len(os.fsencode(name)) > limit:
        raise ConfigError(f"the output file name would be {len(os.fsencode(name))} bytes long; the file system "
                          f"allows {limit}", hint=f"use a shorter {flag}")


def check_name_stem(name: str | None, flag: str = "--name") -> None:
    """A file-name stem the user chose (`--name`) is a plain name: no folder, no hidden file."""
    if name and ("/" in name or "\\" in name or name.startswith(".") or "\0" in name):
        raise ConfigError(f"{flag} '{name}' must be a plain file name stem",
                          hint=f"give {flag} a name without folders, slashes or a leading dot (e.g. alice_beach); "
                               "choose the folder with --out")


def prepare_output_file(path: str | Path, flag: str = "--out") -> Path:
    """The parent folder of output file `path` exists (created), is writable, and `path` is not a folder."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a folder; give the name of the file to write", path=out)
    folder = prepare_output_folder(out.parent, flag)
    check_file_name(folder, f".{out.name}.XXXXXXXX.tmp", flag)  # the atomic writer's temporary is longer
    return out

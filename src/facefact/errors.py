"""User-facing errors.

Every failure a user can cause (a bad photo, a missing weight file, a wrong setting) is raised
as a :class:`FacefactError`: a message that names the file and the problem, and a hint that says
what to do. The CLI prints these without a traceback; library users can catch the base class, or
the builtin each one also is (`ValueError` for bad settings, images and weights,
`FileNotFoundError` for missing models), so code that knows nothing of facefact handles them too.
Causes are chained (`raise ... from err`).
"""
from __future__ import annotations

from pathlib import Path


class FacefactError(Exception):
    """Base class of every error facefact raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None, path: str | Path | None = None,
                 setting: str | None = None):
        self.message = message
        self.hint = hint
        self.path = str(path) if path is not None else None
        # The library's name of the argument at fault (`dtype`, `base_model`); the CLI names its flag.
        self.setting = setting
        super().__init__(self.__str__())

    def __str__(self) -> str:  # message first, then what to do
        text = f"{self.path}: {self.message}" if self.path and self.path not in self.message else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ImageError(FacefactError, ValueError):
    """The file is missing, unreadable, not an image, or an image we refuse to decode."""


class FaceError(FacefactError, ValueError):
    """The photo is an image, but its face cannot be used."""


class NoFaceError(FaceError):
    """No face was found."""


class MultipleFacesError(FaceError):
    """Several faces were found and strict mode asked for exactly one."""


class FaceQualityError(FaceError):
    """A face was found but is too small, cut off, blurred or turned away to be used."""


class CheckpointError(FacefactError, ValueError):
    """A weight file is missing, truncated, of the wrong kind or of the wrong shape."""


class ModelNotFoundError(CheckpointError, FileNotFoundError):
    """A model a command needs is not on disk (and could not or may not be downloaded)."""


class ConfigError(FacefactError, ValueError):
    """A setting or combination of settings is invalid."""


class DatasetError(FacefactError, ValueError):
    """A training or evaluation data set is empty, unreadable or inconsistent."""

"""Shared fixtures: one FaceAnalysis per embedder for the whole session (model loading is the slow part)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def fa():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis()


@pytest.fixture(scope="session")
def fa_dlib():
    from facefact.faces import FaceAnalysis

    return FaceAnalysis(embedder="dlib")


@pytest.fixture(scope="session")
def jpeg_bytes():
    """``jpeg_bytes(rgb, quality=90) -> bytes`` (a fixture, so test files need no shared import)."""
    def encode(rgb: np.ndarray, quality: int = 90) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
        return buf.getvalue()
    return encode

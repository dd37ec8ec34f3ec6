"""Settings for the whole test run."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def hash_cache_in_a_temporary_folder(tmp_path_factory):
    """Provenance hashes are remembered in ~/.cache/facefact/hashes.json; tests keep theirs to themselves."""
    before = os.environ.get("FACEFACT_HASH_CACHE")
    os.environ["FACEFACT_HASH_CACHE"] = str(tmp_path_factory.mktemp("hash-cache") / "hashes.json")
    yield
    if before is None:
        os.environ.pop("FACEFACT_HASH_CACHE", None)
    else:
        os.environ["FACEFACT_HASH_CACHE"] = before

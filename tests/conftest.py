"""Settings and fixtures for the whole test run: the hash cache, one torch thread for the tiny-model
folders, the public-domain photos (as arrays; a folder may override them with paths or PIL images)
and a group photo of both, and an in-process CLI runner."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest_plugins = ["suite_workers"]  # tests/suite_workers.py: how the suite is shared out among pytest-xdist workers

# Folders whose tests run tiny random-weight models: they gain nothing from threads, and on a busy
# 2-core machine two threads spin-wait for each other (one thread is 5-30x faster here).
ONE_THREAD_FOLDERS = {"generation", "identity", "model", "serving", "template"}


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


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread(request):
    """One torch thread for the modules of ONE_THREAD_FOLDERS, restored afterwards."""
    from pathlib import Path

    folder = Path(request.module.__file__).resolve().relative_to(Path(__file__).resolve().parent).parts[0]
    if folder not in ONE_THREAD_FOLDERS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper_path() -> str:
    import matplotlib.cbook as cbook

    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def grace_hopper(grace_hopper_path) -> np.ndarray:
    from facefact.faces import load_image

    return load_image(grace_hopper_path)


@pytest.fixture(scope="session")
def group(astronaut, grace_hopper) -> np.ndarray:
    """The astronaut (left, smaller face) and Grace Hopper (right, larger face) side by side, 512 tall:
    counting from the left and counting from the largest disagree, so a test of face numbers can fail."""
    import cv2

    from facefact.faces import load_image

    astronaut, grace_hopper = load_image(astronaut), load_image(grace_hopper)  # a folder may override them
    h = astronaut.shape[0]
    right = cv2.resize(grace_hopper, (round(grace_hopper.shape[1] * h / grace_hopper.shape[0]), h),
                       interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([astronaut, right], axis=1))


@pytest.fixture(scope="session")
def group_path(tmp_path_factory, group) -> str:
    """`group` as a PNG file."""
    from PIL import Image

    path = tmp_path_factory.mktemp("group") / "group.png"
    Image.fromarray(group).save(path)
    return str(path)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """cli(*argv) -> (exit code, stdout, stderr), run in-process with an isolated home and config."""
    from facefact.cli.main import main

    monkeypatch.setenv("FACEFACT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("FACEFACT_CONFIG", "FACEFACT_ADAPTER", "FACEFACT_ENCODER", "FACEFACT_BASE_MODEL",
                "FACEFACT_DEVICE", "FACEFACT_DTYPE"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


@pytest.fixture(scope="session")
def ray_cluster():
    """A private two-node Ray cluster on this machine's loopback (a head and one more worker node,
    one CPU each), shared by the session's Ray tests and stopped after them (all its processes).
    Its workers import facefact from this process's PYTHONPATH, like the commands under test."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -e '.[ray]')")
    from facefact.ray_local import private_cluster_process

    with private_cluster_process(nodes=2, cpus_per_node=1) as cluster:
        yield cluster

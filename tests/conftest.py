"""Settings and fixtures for the whole test run: caches of its own, one torch thread for the tiny-model
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


# Caches that libraries write under a fixed path (the home folder, /tmp/gradio), where another worker or another
# test run on this machine writes the same files at the same time: each session gets its own.
SESSION_CACHES = {"FACEFACT_HASH_CACHE": "hashes.json",  # provenance hashes, else ~/.cache/facefact/hashes.json
                  "GRADIO_TEMP_DIR": "gradio"}  # the UI's uploads, else /tmp/gradio/<hash>/<name>, written unlocked


@pytest.fixture(scope="session", autouse=True)
def caches_in_a_temporary_folder(tmp_path_factory):
    """SESSION_CACHES point into this session's temporary folder while it runs."""
    folder = tmp_path_factory.mktemp("caches")
    before = {var: os.environ.get(var) for var in SESSION_CACHES}
    os.environ.update({var: str(folder / name) for var, name in SESSION_CACHES.items()})
    yield
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


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

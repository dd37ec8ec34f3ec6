"""`facefact prepare --ray` on a real Ray cluster (a head and one more worker node on this machine's
loopback, the session's `ray_cluster`): the local run's files byte for byte, a run stopped halfway
resumed with only the rest, a Ray worker killed mid-run without a photo lost or written twice."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facefact.training.dataset_format import INFO_NAME

HANG_GUARD_S = 600  # upper bounds on hangs only; the runs take seconds to a minute on a busy box


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _command(photos: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "facefact.cli.main", "prepare", str(photos), "--out", str(out), "--size", "128",
            "--ray", address, "--quiet"]


def _finished(out: Path) -> set[str]:
    """Photos whose record is written (accepted or rejected)."""
    return {p.name.split(".")[0] for p in out.glob("samples/*/*.json")}


def _wait_for(condition, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert process.poll() is None, f"the command ended before {what}: {process.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} within {HANG_GUARD_S} s"
        time.sleep(0.02)


def _photo_actors(cluster_pid: int) -> list:
    """The Ray worker processes running prepare's actors (descendants of the private cluster)."""
    import psutil

    found = []
    for proc in psutil.Process(cluster_pid).children(recursive=True):
        try:
            if "PhotoActor" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow  # a Ray cluster run: ~30 s of Ray start-up per command on a busy 2-core box
def test_ray_run_writes_the_local_runs_files(ray_cluster, photo_folder, prepared, tmp_path):
    out = tmp_path / "ray"
    done = subprocess.run(_command(photo_folder, out, ray_cluster.address), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / INFO_NAME).read_text())["summary"]["processed_now"] == 6
    assert _files(out) == _files(prepared)  # every file, dataset.json and the index shards included


@pytest.mark.slow  # a Ray cluster run: ~30 s of Ray start-up per command on a busy 2-core box
def test_stopped_run_resumes_and_survives_a_killed_worker(ray_cluster, larger_photo_folder, tmp_path):
    pytest.importorskip("psutil", reason="finding the Ray worker to kill needs psutil")
    from facefact.training.prepare import PrepareSettings, prepare_dataset

    local = tmp_path / "local"
    prepare_dataset(larger_photo_folder, local, PrepareSettings(size=128), progress=False)
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    # 1. stopped (SIGTERM, as a container stop) once the first photos are written
    first = subprocess.Popen(_command(larger_photo_folder, out, ray_cluster.address), env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _finished(out), "a finished photo", first)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=HANG_GUARD_S)
    assert first.returncode == 130, stderr
    done_before = _finished(out)
    assert 0 < len(done_before) < 24 and not (out / "index").exists()

    # 2. the same command again, one of its Ray workers killed once it has written a photo more
    second = subprocess.Popen(_command(larger_photo_folder, out, ray_cluster.address), env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: len(_finished(out)) > len(done_before) and _photo_actors(ray_cluster.pid),
              "a photo of the second run", second)
    killed_while_running = len(_finished(out)) < 24
    _photo_actors(ray_cluster.pid)[0].kill()
    stdout, stderr = second.communicate(timeout=HANG_GUARD_S)
    assert second.returncode == 0, stderr
    assert stdout.startswith("{"), stdout  # the summary, as from a local run
    summary = json.loads((out / INFO_NAME).read_text())["summary"]
    assert (summary["processed_now"], summary["skipped_already_done"]) == (24 - len(done_before), len(done_before))
    assert killed_while_running  # the kill came before the last photo (else this test proves nothing)

    ray_files, local_files = _files(out), _files(local)
    ray_files.pop(INFO_NAME), local_files.pop(INFO_NAME)  # its counts say which run did what
    assert ray_files == local_files  # complete, nothing twice, nothing half-written (no temporaries)


def test_without_ray_the_flag_says_how_to_install_it(cli, photo_folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    code, stdout, stderr = cli("prepare", photo_folder, "--out", tmp_path / "out", "--ray")
    assert code == 2 and stdout == ""
    assert stderr.startswith("facefact prepare: error: --ray: ") and 'pip install -e ".[ray]"' in stderr
    assert len(stderr.strip().splitlines()) == 2  # the error and its hint
    assert not (tmp_path / "out" / "samples").exists()


def test_an_address_nothing_answers_at_is_refused_at_once(cli, photo_folder, tmp_path):
    pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, stderr = cli("prepare", photo_folder, "--out", tmp_path / "out", "--ray", f"127.0.0.1:{port}")
    assert code == 2 and f"--ray: no Ray cluster answers at 127.0.0.1:{port}" in stderr and "ray start" in stderr
    code, _, stderr = cli("prepare", photo_folder, "--out", tmp_path / "out", "--ray", "not-an-address")
    assert code == 2 and "HOST:PORT" in stderr

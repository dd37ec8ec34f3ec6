"""`facefact evaluate --ray` on a real Ray cluster (a head and one more worker node on this machine's
loopback, the session's `ray_cluster`): the local run's images byte for byte and its metrics (all
but the recorded time and memory), and a re-run that generates only the images that are missing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HANG_GUARD_S = 600  # an upper bound on a hang only
TIMING = {"time_s", "peak_mb", "mem_kind"}  # measured, so different from run to run


def _args(identities, prompts, out) -> list[str]:
    return ["evaluate", "--identities", str(identities), "--prompts", str(prompts), "--seeds", "2", "--model", "tiny",
            "--steps", "2", "--size", "64", "--method", "fact:0.5", "--out", str(out), "--no-progress"]


def _ray_run(args: list[str], address: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "facefact.cli.main", *args, "--ray", address], capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    return done


def _measured(run) -> dict:
    """results.json without what differs between two runs of the same work (timings, dates)."""
    data = json.loads((run / "results.json").read_text())
    data["config"] = {k: v for k, v in data["config"].items() if k not in ("started", "wall_s")}
    data["images"] = [{k: v for k, v in row.items() if k not in TIMING} for row in data["images"]]
    data["aggregate"] = [{k: v for k, v in row.items() if k not in TIMING} for row in data["aggregate"]]
    return data


def _pngs(run) -> dict[str, bytes]:
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted((run / "images").rglob("*.png"))}


@pytest.mark.slow  # a Ray cluster run: ~30 s of Ray start-up per command on a busy 2-core box
def test_ray_run_gives_the_local_images_and_metrics_and_resumes(ray_cluster, cli, identities_dir, prompt_file,
                                                                 tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    code, _, stderr = cli(*_args(identities_dir, prompt_file, local))
    assert code == 0, stderr
    done = _ray_run(_args(identities_dir, prompt_file, remote), ray_cluster.address)
    assert "added 'base'" in done.stdout and "results:" in done.stdout  # the local run's report on stdout
    assert _pngs(remote) == _pngs(local) and len(_pngs(local)) == 16  # 2 people x 2 prompts x 2 seeds x 2 methods
    assert _measured(remote) == _measured(local)
    assert not list(remote.rglob("*.tmp"))

    # a run cut short: four images (and their records) missing; the re-run makes exactly those
    gone = sorted(_pngs(remote))[::4]
    for name in gone:
        (remote / name).unlink()
        (remote / name).with_suffix(".json").unlink()
    _ray_run(_args(identities_dir, prompt_file, remote), ray_cluster.address)
    rows = json.loads((remote / "results.json").read_text())["images"]
    assert {r["image"] for r in rows if not r["cached"]} == set(gone)
    assert _pngs(remote) == _pngs(local)
    again = _measured(remote)
    again["images"] = [{k: v for k, v in r.items() if k != "cached"} for r in again["images"]]
    again["aggregate"] = [{k: v for k, v in r.items() if k != "generated_now"} for r in again["aggregate"]]
    first = _measured(local)
    first["images"] = [{k: v for k, v in r.items() if k != "cached"} for r in first["images"]]
    first["aggregate"] = [{k: v for k, v in r.items() if k != "generated_now"} for r in first["aggregate"]]
    assert again == first


def test_ray_needs_method_specs_and_workers_need_ray(cli, identities_dir, prompt_file, tmp_path):
    from facefact.errors import ConfigError
    from facefact.evaluation import evaluate

    with pytest.raises(ConfigError, match="by their specs"):
        evaluate(identities_dir, prompt_file, methods=[object()], out=tmp_path / "run", ray="auto")
    code, _, stderr = cli(*_args(identities_dir, prompt_file, tmp_path / "run"), "--workers", "2")
    assert code == 2 and "needs --ray" in stderr


@pytest.mark.slow  # a Ray cluster run: ~30 s of Ray start-up per command on a busy 2-core box
def test_a_model_a_worker_cannot_load_is_the_commands_one_line_error(ray_cluster, identities_dir, prompt_file,
                                                                      tmp_path):
    """The driver only hashes the adapter; the actors load it: their error comes back whole (message and
    hint), not as Ray's traceback."""
    damaged = tmp_path / "adapter.safetensors"
    damaged.write_bytes(b"\xff" * 1000)
    done = subprocess.run([sys.executable, "-m", "facefact.cli.main", *_args(identities_dir, prompt_file,
                                                                              tmp_path / "run"),
                           "--adapter", str(damaged), "--ray", ray_cluster.address],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("facefact evaluate: error:")]
    assert len(errors) == 1 and "not a readable .safetensors file" in errors[0] and str(damaged) in errors[0]
    assert "Traceback" not in done.stderr and "ray::" not in done.stderr
    assert not list((tmp_path / "run").rglob("*.png"))


def test_ray_error_types_give_back_the_workers_error():
    """Ray re-raises a worker's exception as a class made from its own error and ours, whose text is
    Ray's (the worker's process and traceback): the command reports the original, message and hint."""
    exceptions = pytest.importorskip("ray.exceptions", reason="the ray extra is not installed")
    from facefact.errors import CheckpointError
    from facefact.ray_batch import _facefact_cause

    original = CheckpointError("cannot read a.safetensors", hint="convert it again")
    wrapped = exceptions.RayTaskError("submit", "Traceback (most recent call last): ...", original).as_instanceof_cause()
    assert isinstance(wrapped, CheckpointError) and not str(wrapped).startswith("cannot read")  # Ray's text
    assert _facefact_cause(wrapped) is original
    assert _facefact_cause(RuntimeError("lost")) is None

"""bench/gpu_check.py (issue 20): the device check runs on the CPU with the tiny models - the same code a GPU
session runs - and reports every check, so it cannot rot while no GPU is lent."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from gpu_check import CHECK_NAMES, parse_args  # noqa: E402
from gpu_checks.report import Report  # noqa: E402

pytestmark = pytest.mark.slow  # bench/gpu_check.py on the CPU, in a subprocess: about a minute


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "tmp.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(BENCH.parent / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=2400)  # an upper bound on a hang only
    return proc, json.loads(out.read_text()) if out.exists() else None


def test_every_check_runs_on_the_cpu_and_passes(tiny_run):
    proc, report = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["checks_run"] == list(CHECK_NAMES) and report["device"] == "cpu" and report["tiny"] is True
    by_check = {name: [r for r in report["results"] if r["check"] == name] for name in CHECK_NAMES}
    assert report["summary"]["FAIL"] == 0
    kinds = ("text2img", "img2img", "inpaint4", "inpaint9", "controlnet", "controlnet_img2img", "controlnet_inpaint")
    assert {r["name"] for r in by_check["pipelines"]} == {f"{k} {d}" for k in kinds for d in report["dtypes"]}
    for result in by_check["pipelines"]:
        values = result["values"]
        assert result["status"] == "PASS" and values["scale0_max_diff"] == 0 and values["unload_restores"]
        assert values["token_places"] == [values["unet_place"]] and values["loop_resampler_calls"] == 0
    numerics = {r["name"]: r for r in by_check["numerics"]}
    assert set(numerics) == {"bf16 vs fp32", "cpu fp32 vs cpu fp32"}
    low = numerics["bf16 vs fp32"]["values"]
    assert 0 < low["errors"]["FACT step"] <= low["bound"]  # bf16 really ran: not the fp32 numbers again
    assert all(v == 0 for v in numerics["cpu fp32 vs cpu fp32"]["values"]["errors"].values())
    (template,) = by_check["template"]
    assert template["status"] == "PASS" and template["values"]["passes"] == 2
    assert template["values"]["changed_outside_reach"] == 0 and template["values"]["controlnet_calls"][0] > 0
    assert [r["status"] for r in by_check["offload"]] == ["SKIP"] and "CPU" in by_check["offload"][0]["detail"]
    assert [r["status"] for r in by_check["training"]] == ["PASS", "PASS"]
    assert by_check["training"][0]["values"]["fair"] > 0
    compiled = {r["name"]: r for r in by_check["compile"]}
    assert set(compiled) == {"recompiles", "fuser graph breaks"} and all(r["status"] == "PASS" for r in compiled.values())
    recompiles = compiled["recompiles"]["values"]
    assert recompiles["problems"] == [] and recompiles["graph_breaks"] == 0 and recompiles["max_pixel_diff"] == 0
    assert recompiles["warm_graphs"] == 2 and recompiles["region_graphs"] == 1  # FACT on / off; the regions layout
    assert [r["status"] for r in by_check["syncs"]] == ["SKIP"] and "CPU" in by_check["syncs"][0]["detail"]


def test_the_speed_table_has_its_rows_and_never_a_verdict(tiny_run):
    proc, report = tiny_run
    rows = {r["row"]: r for r in report["speed"]}
    assert {"base", "FACT", "FACT channels_last", "FACT fused QKV", "FACT SDPA math", "FACT batch 4",
            "FACT LCM 4 steps + LoRA", "template (FACT)"} <= set(rows)
    for row in rows.values():
        assert row["portrait_s"] > 0 and row["portraits_per_s"] > 0 and row["peak_vram_mib"] is None  # a CPU
    assert rows["FACT LCM 4 steps + LoRA"]["steps"] == 4 and rows["FACT batch 4"]["batch"] == 4
    assert math.isclose(rows["FACT batch 4"]["portraits_per_s"], 4 / rows["FACT batch 4"]["portrait_s"])
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| row | dtype | batch | steps | s / portrait") for line in lines)
    assert any(line.startswith("PASS pipelines/text2img fp32: finite True") for line in lines)
    assert lines[-1].endswith("0 failed")


def test_choosing_checks_and_a_budget(tmp_path):
    args, _ = parse_args(["--only", "numerics,speed,training", "--skip", "speed", "--device", "cpu", "--tiny"])
    assert args.checks == ["numerics", "training"] and args.size == 64
    for bad in (["--only", "numrics"], ["--repeats", "0"], ["--size", "100"]):
        with pytest.raises(SystemExit) as stopped:
            parse_args(bad)
        assert stopped.value.code == 2
    report = Report(tmp_path / "r.json", budget_s=0.0, header={"device": "cpu"})
    assert not report.fits(1.0) and Report(None, None, {}).fits(1e9)
    report.skip("speed", "FACT bf16", "the --budget-s is spent")
    report.require("numerics", "fp16 vs fp32", False, "error nan", error=float("nan"))
    saved = json.loads((tmp_path / "r.json").read_text())  # strict JSON: the NaN is written as null
    assert saved["summary"] == {"PASS": 0, "FAIL": 1, "SKIP": 1} and saved["results"][1]["values"]["error"] is None
    assert [r["name"] for r in report.failed] == ["fp16 vs fp32"]

"""bench/flops.py: FLOP counting on CPU must include attention (FlopCounterMode alone skips the CPU SDPA kernel)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from flops import attention_flops, count_flops  # noqa: E402


def test_cpu_sdpa_is_counted():
    b, h, lq, lk, d = 2, 3, 50, 66, 8
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    total, by_op, out = count_flops(F.scaled_dot_product_attention, q, k, v)
    assert total == 4 * b * h * lq * lk * d == attention_flops(q.shape, k.shape, v.shape)
    assert out.shape == (b, h, lq, d)
    assert sum(by_op.values()) == total


def test_linear_and_attention_add_up():
    x, w = torch.randn(4, 10, 16), torch.randn(32, 16)
    q = k = v = torch.randn(1, 2, 10, 16)
    total, _, _ = count_flops(lambda: (F.linear(x, w), F.scaled_dot_product_attention(q, k, v)))
    assert total == 2 * 40 * 16 * 32 + 4 * 1 * 2 * 10 * 10 * 16


def test_bench_sorts_operators_into_kinds():
    """The benchmark's time breakdown puts each operator it profiles into the right kind."""
    from bench_adapter import KINDS, flops_by_kind, op_kind

    assert op_kind("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert op_kind("aten::mkldnn_convolution") == "convolution"
    for name in ("aten::addmm", "aten::mm", "aten::bmm"):
        assert op_kind(name) == "linear", name
    for name in ("aten::native_layer_norm", "aten::copy_", "aten::addcmul", "aten::gelu"):
        assert op_kind(name) == "other", name
    by_kind = flops_by_kind({"addmm": 5, "mm": 7, "convolution": 11, "_scaled_dot_product_flash_attention_for_cpu": 13})
    assert by_kind == {"attention": 13, "linear": 12, "convolution": 11, "other": 0} and tuple(by_kind) == KINDS


def test_bench_script_runs_end_to_end_on_the_tiny_models(tmp_path):
    """`bench/bench_adapter.py --tiny` runs as a user runs it and prints the table; the FLOPs it
    reports for FACT's own attention match the tiny UNet's layout worked out by hand."""
    import json
    import os
    import subprocess

    script = Path(__file__).parents[2] / "bench" / "bench_adapter.py"
    out_json = tmp_path / "bench.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), "--tiny", "--repeats", "1", "--dtypes", "float32",
                           "--no-compile", "--json", str(out_json)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| dtype | path | bare s/step | FACT s/step | overhead") for line in lines)
    row = next(line for line in lines if line.startswith("| fp32 | eager |"))
    assert "%" in row and "x1." in row
    assert any(line.startswith("| attention |") for line in lines)  # the breakdown by kind of operator
    assert "torch 2" in lines[0] and "CPU " in lines[0]

    (result,) = json.loads(out_json.read_text())["rows"]
    assert result["bare_s"] > 0 and result["fact_s"] > 0 and result["peak_fact_mib"] > 0
    # tiny UNet, 16x16 latents: (tokens, width, fusers) per level - down 16², 8², 4² (2 each), mid 2²,
    # up 4², 8², 16² (3 each); each fuser attends len(h) queries over len(h) + 16 face-token keys
    levels = [(256, 32, 2), (64, 32, 2), (16, 64, 2), (4, 64, 1), (16, 64, 3), (64, 32, 3), (256, 32, 3)]
    batch = 2
    added = sum(n * attention_flops((batch, 1, lq, width), (batch, 1, lq + 16, width), (batch, 1, lq + 16, width))
                for lq, width, n in levels)
    assert result["attention_flops_fact"] - result["attention_flops_bare"] == added
    assert result["flops_fact"] > result["flops_bare"] + added  # plus the fusers' linears


def test_bench_script_runs_on_the_tiny_sdxl_models_with_either_layout(tmp_path):
    """`--family sdxl` runs the SDXL UNet with its micro-conditioning; `--layout all` puts a fuser on
    every block of the tiny SDXL UNet (17) and costs more FLOPs than "first" (11)."""
    import json
    import os
    import subprocess

    script = Path(__file__).parents[2] / "bench" / "bench_adapter.py"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    ratios = {}
    for layout, fusers in (("first", 11), ("all", 17)):
        out_json = tmp_path / f"{layout}.json"
        proc = subprocess.run([sys.executable, str(script), "--tiny", "--family", "sdxl", "--layout", layout,
                               "--repeats", "1", "--dtypes", "float32", "--no-compile", "--no-breakdown", "--no-memory",
                               "--json", str(out_json)], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "tiny sdxl UNet" in proc.stdout and f"{fusers} fusers, layout {layout}" in proc.stdout
        (row,) = json.loads(out_json.read_text())["rows"]
        ratios[layout] = row["flops_fact"] / row["flops_bare"]
    assert 1 < ratios["first"] < ratios["all"]

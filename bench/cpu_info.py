"""The CPU a bench ran on, for its printed header (benchmarks print the CPU: sessions differ)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """/proc/cpuinfo's model name, plus the ISA flags that decide bf16 speed (VMs often say only 'AMD EPYC')."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), platform.machine())
    flags = next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), [])
    field = {l.split(":", 1)[0].strip(): l.split(":", 1)[1].strip() for l in info[:30] if ":" in l}
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} (family {field.get('cpu family', '?')} model {field.get('model', '?')}; {', '.join(shown) or 'no avx2'})"

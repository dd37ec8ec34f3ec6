"""What the device check found: one line per result as it comes, the tables at the end, and the JSON
rewritten after every result (write then rename), so a run cut short still leaves its findings."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class Report:
    def __init__(self, out: Path | None, budget_s: float | None, header: dict):
        self.out = out
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.header = header
        self.results: list[dict] = []   # correctness results: check, name, status, detail, values
        self.rows: list[dict] = []      # the speed table
        self.checks_run: list[str] = []

    # ---- time ------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()

    def fits(self, estimate_s: float) -> bool:
        """Whether work estimated at `estimate_s` seconds fits the budget left (--budget-s)."""
        return self.time_left() >= estimate_s

    # ---- results ---------------------------------------------------------------------------------
    def record(self, check: str, name: str, status: str, detail: str = "", **values) -> bool:
        """One result; returns whether it passed (SKIP counts as not failed)."""
        entry = {"check": check, "name": name, "status": status, "detail": detail,
                 "values": {k: _plain(v) for k, v in values.items()}, "at_s": round(self.elapsed(), 1)}
        self.results.append(entry)
        print(f"{status} {check}/{name}" + (f": {detail}" if detail else ""), flush=True)
        self.save()
        return status != FAIL

    def require(self, check: str, name: str, ok: bool, detail: str = "", **values) -> bool:
        return self.record(check, name, PASS if ok else FAIL, detail, **values)

    def skip(self, check: str, name: str, why: str) -> None:
        self.record(check, name, SKIP, why)

    def row(self, row: dict) -> None:
        self.rows.append({k: _plain(v) for k, v in row.items()})
        print("  " + speed_line(self.rows[-1]), flush=True)
        self.save()

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] == FAIL]

    # ---- output ----------------------------------------------------------------------------------
    def as_json(self) -> dict:
        return {**self.header, "elapsed_s": round(self.elapsed(), 1), "checks_run": self.checks_run,
                "results": self.results, "speed": self.rows,
                "summary": {status: sum(r["status"] == status for r in self.results) for status in (PASS, FAIL, SKIP)}}

    def save(self) -> None:
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.as_json(), indent=1, allow_nan=False))
        os.replace(temporary, self.out)

    def tables(self) -> str:
        lines = []
        if self.results:
            lines += ["", "| check | result | status | detail |", "|---|---|---|---|"]
            lines += [f"| {r['check']} | {r['name']} | {r['status']} | {r['detail']} |" for r in self.results]
        if self.rows:
            lines += ["", SPEED_HEADER, SPEED_RULE]
            lines += [speed_line(r) for r in self.rows]
        return "\n".join(lines)


SPEED_HEADER = ("| row | dtype | batch | steps | s / portrait | portraits / s | s / UNet step | "
                "peak VRAM MiB | cold compile s | note |")
SPEED_RULE = "|---|---|---|---|---|---|---|---|---|---|"


def _number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def speed_line(r: dict) -> str:
    return (f"| {r['row']} | {r['dtype']} | {r['batch']} | {r['steps']} | {_number(r.get('portrait_s'))} | "
            f"{_number(r.get('portraits_per_s'), 2)} | {_number(r.get('step_s'), 4)} | "
            f"{_number(r.get('peak_vram_mib'), 0)} | {_number(r.get('compile_s'), 1)} | {r.get('note', '')} |")


def _plain(value):
    """JSON-safe: NaN / infinity as None (strict JSON), tuples as lists, other objects as text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)

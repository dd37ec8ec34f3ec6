"""Which value in a report table earns the "best" mark: only one that beats the runner-up by more
than the noise of the two means, and never a no-face control (it is the yardstick, not a contender).

Noise is measured from the run itself: the per-image (or per-group, for the diversity metrics)
values behind each mean give its standard error; the best mean must lead the second by more than
two standard errors of the difference. With fewer than two contenders nothing is marked.
"""
from __future__ import annotations

import math

from facefact.evaluation.results import EvalResults

NOISE_SIGMAS = 2.0


def control_methods(res: EvalResults) -> set[str]:
    """The methods other methods are measured against (the 'base' no-face control)."""
    names = {r.get("control") for r in res.rows if r.get("control")}
    settings = res.config.get("method_settings") or {}
    return names | {m for m, s in settings.items() if isinstance(s, dict) and s.get("use_face") is False}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def samples(res: EvalResults, method: str, metric: str) -> list[float]:
    """The values whose mean is the aggregate `metric` of `method` (empty when it has none)."""
    rows = [r for r in res.rows if r["method"] == method]
    if metric == "detection_rate":
        return [float(bool(r.get("detected"))) for r in rows]
    if metric.startswith("id_match_"):
        name = metric[len("id_match_"):]
        threshold = (res.config.get("thresholds") or {}).get(name)
        values = [r.get(f"id_sim_{name}") for r in rows]
        return [float(v >= threshold) for v in values if _finite(v)] if threshold is not None else []
    if any(metric in r for r in rows):
        return [float(r[metric]) for r in rows if _finite(r.get(metric))]
    return [float(g[metric]) for g in res.groups if g["method"] == method and _finite(g.get(metric))]


def _mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def best_index(candidates: list[list[float] | None], direction: str) -> int | None:
    """Index of the clear winner among `candidates` (None entries are not contenders), or None when
    there is no clear one: fewer than two contenders, or a lead within the noise."""
    if direction not in ("higher", "lower"):
        return None
    stats = [(i, *_mean_se(v)) for i, v in enumerate(candidates) if v is not None and len(v) >= 2]
    if len(stats) < 2:
        return None
    stats.sort(key=lambda s: s[1], reverse=direction == "higher")
    (best, m1, se1), (_, m2, se2) = stats[0], stats[1]
    return best if abs(m1 - m2) > NOISE_SIGMAS * math.hypot(se1, se2) else None

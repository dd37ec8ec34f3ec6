"""Plots for the HTML report, drawn with matplotlib's Agg backend and returned as inline base64 PNG
(``data:`` URIs), so the report opens anywhere with no network and no files beside it."""
from __future__ import annotations

import base64
import io
import math

import numpy as np


def _figure(width: float = 5.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg", force=False)  # never needs a display
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=90)


def _to_data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and not math.isnan(v)


def bar_chart(title: str, series: dict[str, dict[str, float]]) -> str | None:
    """Grouped bars: ``series[run][method] = value``. None when nothing is finite (the plot is left out)."""
    methods = list(dict.fromkeys(m for values in series.values() for m in values))
    if not any(_finite(v) for values in series.values() for v in values.values()):
        return None
    fig = _figure(max(4.0, 1.1 * len(methods) + 1.5), 2.8)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    x = np.arange(len(methods))
    for i, (run, values) in enumerate(series.items()):
        heights = [values.get(m, math.nan) for m in methods]
        ax.bar(x + i * width - 0.4 + width / 2, [h if _finite(h) else 0 for h in heights], width, label=run)
    ax.set_xticks(x, methods, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return _to_data_uri(fig)


def scatter(title: str, xlabel: str, ylabel: str, points: dict[str, list[tuple[float, float]]]) -> str | None:
    """One colour per label (method or run/method); means drawn as large markers."""
    if not any(_finite(x) and _finite(y) for pts in points.values() for x, y in pts):
        return None
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    for label, pts in points.items():
        pts = [(x, y) for x, y in pts if _finite(x) and _finite(y)]
        if not pts:
            continue
        xs, ys = zip(*pts)
        dots = ax.scatter(xs, ys, s=10, alpha=0.35)
        ax.scatter([np.mean(xs)], [np.mean(ys)], s=90, marker="D", color=dots.get_facecolor()[0][:3],
                   edgecolors="black", label=label)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _to_data_uri(fig)


def trade_off_curves(title: str, xlabel: str, ylabel: str,
                     curves: dict[str, list[tuple[float, float, float]]]) -> str | None:
    """One line per setting (window / combine mode) through its (x, y) means, in order of FACT
    scale, each point labelled with its scale: how identity trades against the other axis."""
    curves = {name: sorted((s, x, y) for s, x, y in pts if _finite(x) and _finite(y)) for name, pts in curves.items()}
    curves = {name: pts for name, pts in curves.items() if len(pts) >= 2}
    if not curves:
        return None
    fig = _figure(5.0, 3.4)
    ax = fig.add_subplot()
    for name, pts in curves.items():
        scales, xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", label=name)
        for scale, x, y in pts:
            ax.annotate(f"{scale:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _to_data_uri(fig)

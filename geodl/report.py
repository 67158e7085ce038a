"""Run reports: a metrics table and figures, gathered in ``report/index.html``."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["metric_columns", "metrics_table_html", "metrics_table_text", "write_index"]

#: The order the field reads scores in: error, skill, resolved scales, calibration, ratios.
METRIC_ORDER = (
    "rmse",
    "rmse_a",
    "rmse_s",
    "rmse_u",
    "spread_a",
    "mu",
    "mu_std",
    "lambda_x",
    "lambda_t",
    "coverage_68",
    "coverage_95",
    "crps",
    "rmse_ratio_oi",
    "lambda_x_ratio_oi",
    "mu_gain_oi",
)


def metric_columns(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The scalar metrics of ``methods`` in :data:`METRIC_ORDER`, any others after, sorted.

    Examples
    --------
    >>> metric_columns({"oi": {"crps": 1.0, "mu": 0.5, "rmse": 0.1, "zeta": 2}})
    ['rmse', 'mu', 'crps', 'zeta']
    """
    found = {
        k
        for m in methods.values()
        if isinstance(m, Mapping)
        for k, v in m.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    known = [c for c in METRIC_ORDER if c in found]
    return known + sorted(found - set(known))


def metrics_table_text(metrics: Mapping[str, Any]) -> str:
    """``metrics.json``'s scalar scores as a Markdown table (what ``geodl run`` prints at the
    end), or "" when there are none."""
    methods: Mapping[str, Mapping[str, Any]] = metrics.get("methods", {})
    columns = metric_columns(methods)
    if not columns:
        return ""
    units = metrics.get("units", {})
    head = [f"{c} [{units[c]}]" if units.get(c) else c for c in columns]
    lines = ["| method | " + " | ".join(head) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in methods.items():
        if not isinstance(values, Mapping):
            continue
        cells = [_cell(metrics, name, c) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = _bounds_note(metrics)
    return "\n".join(lines) + (f"\n{note}" if note else "")


def _cell(metrics: Mapping[str, Any], method: str, column: str) -> str:
    """One table cell: the value to 4 digits, with ``<=`` / ``>=`` where it is a bound
    (``metrics["bounds"]``: a PSD score that never crossed 0.5) and ``?`` where a ratio mixes
    bounds of both sides."""
    value = metrics["methods"][method].get(column)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    side = metrics.get("bounds", {}).get(method, {}).get(column)
    if side == "?":
        return f"{value:.4g}?"
    return f"{side} {value:.4g}" if side else f"{value:.4g}"


def _bounds_note(metrics: Mapping[str, Any]) -> str:
    if not metrics.get("bounds"):
        return ""
    return (
        "<= / >=: a bound, not a measured resolution (the PSD score is above 0.5 at every "
        "resolved scale, or below it at every one)"
    )


def metrics_table_html(metrics: Mapping[str, Any]) -> str:
    """HTML table of ``metrics.json`` content: one row per method, one column per metric (in
    :data:`METRIC_ORDER`)."""
    methods: Mapping[str, Mapping[str, float]] = metrics.get("methods", {})
    columns = metric_columns(methods)
    units = metrics.get("units", {})
    head = "".join(
        f"<th>{html.escape(c)}{' [' + html.escape(units[c]) + ']' if c in units else ''}</th>"
        for c in columns
    )
    rows = []
    for name, values in methods.items():
        if not isinstance(values, Mapping):
            continue
        cells = "".join(f"<td>{html.escape(_cell(metrics, name, c))}</td>" for c in columns)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    note = _bounds_note(metrics)
    note = f"<p class='note'>{html.escape(note)}</p>" if note else ""
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>{note}"


def write_index(
    report_dir: Path,
    title: str,
    metrics: Mapping[str, Any],
    figures: Sequence[str | tuple[str, str]],
    *,
    warnings: list[str] = (),  # type: ignore[assignment]
    config: str | None = None,
) -> Path:
    """Write ``index.html`` showing the metrics table, the run's ``warnings`` (e.g. prepare's),
    ``figures`` (names inside report_dir, or ``(name, caption)`` pairs: what the figure shows
    and how to read it) and the resolved ``config`` (YAML text)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(f, f) if isinstance(f, str) else f for f in figures]
    imgs = "\n".join(
        f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>'
        f"{html.escape(c)}</figcaption></figure>"
        for f, c in pairs
    )
    warned = (
        "<h2>Warnings</h2><ul>"
        + "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
        + "</ul>\n"
        if warnings
        else ""
    )
    shown = f"<h2>Config</h2><pre>{html.escape(config)}</pre>\n" if config else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}img{{max-width:900px}}</style>
</head><body><h1>{html.escape(title)}</h1>
<h2>Metrics ({html.escape(str(metrics.get("task", "")))})</h2>
{metrics_table_html(metrics)}
{warned}<h2>Figures</h2>
{imgs}
{shown}</body></html>
"""
    path = report_dir / "index.html"
    path.write_text(page)
    return path


def read_learning_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Epoch-level curves ``{metric: [(epoch, value), ...]}`` from every ``metrics.csv`` under
    ``log_dir`` (a resumed training logs to its own sub-folder; later files win for an epoch)."""
    import csv

    curves: dict[str, dict[int, float]] = {}
    for path in sorted(Path(log_dir).rglob("metrics.csv"), key=lambda p: (len(p.parts), str(p))):
        with path.open() as fh:
            for row in csv.DictReader(fh):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for name, value in row.items():
                    if name in ("epoch", "step") or not value or name.endswith("_step"):
                        continue
                    curves.setdefault(name.removesuffix("_epoch"), {})[int(epoch)] = float(value)
    return {k: sorted(v.items()) for k, v in curves.items()}


def plot_learning_curves(log_dir: Path, out_png: Path, title: str = "learning curves") -> Path:
    """Figure of the epoch-level losses logged during training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_learning_curves(log_dir)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(curves.items()):
        if "loss" in name and points:
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png

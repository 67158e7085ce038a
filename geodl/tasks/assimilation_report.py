"""Figures, table and ``report/index.html`` of an assimilation run: trajectories, learning curves,
the DAPPER-style table of scores."""

from __future__ import annotations

import json
from typing import Any

import xarray as xr

from geodl.pipeline import StageContext

__all__ = ["dapper_table", "write_assimilation_report"]


def write_assimilation_report(ctx: StageContext) -> None:
    """Write ``report/`` of the ``report`` stage: ``trajectories.png`` (truth, observations and
    every method's estimate of the first trajectory), ``learning_curves.png`` (if 4DVarNet was
    trained), ``table.md`` (:func:`dapper_table`) and ``index.html``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["trajectories.png"]
    with (
        xr.open_dataset(ctx.input("truth.nc")) as t,
        xr.open_dataset(ctx.input("obs.nc")) as o,
        xr.open_dataset(ctx.input("analysis.nc")) as a,
    ):
        time_ = t["time"].values
        n_show = min(len(time_), 500)
        fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
        for comp, ax in enumerate(axes):
            if comp >= t.sizes["component"]:
                break
            ax.plot(time_[:n_show], t["truth"][0, :n_show, comp], "k", lw=1.2, label="truth")
            ax.plot(time_[:n_show], o["obs"][0, :n_show, comp], "r.", ms=4, label="obs")
            for name in a.data_vars:
                ax.plot(time_[:n_show], a[name][0, :n_show, comp], lw=0.8, label=str(name))
            ax.set_ylabel(f"x{comp}")
        axes[0].legend(loc="upper right", fontsize=8, ncol=4)
        axes[-1].set_xlabel("time (model units)")
        fig.tight_layout()
        fig.savefig(report_dir / "trajectories.png", dpi=100)
        plt.close(fig)
    logs = ctx.run_dir / "logs" / "fourdvarnet"
    if logs.exists() and any(logs.rglob("metrics.csv")):
        plot_learning_curves(logs, report_dir / "learning_curves.png", "fourdvarnet training")
        figures.append("learning_curves.png")
    (report_dir / "table.md").write_text(dapper_table(metrics))
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)


def dapper_table(metrics: dict[str, Any]) -> str:
    """Markdown table ``method | rmse_a | rmse`` with mean ± std over trajectories.

    Examples
    --------
    >>> m = {"methods": {"enkf": {"rmse": 0.7, "rmse_std": 0.1, "rmse_analysis": 0.6,
    ...                           "rmse_analysis_std": 0.05}}}
    >>> print(dapper_table(m).splitlines()[2])
    | enkf | 0.600 ± 0.050 | - | 0.700 ± 0.100 |
    """
    lines = [
        "| method | RMSE at analysis times | time-mean RMSE (DAPPER) | RMSE over the window |",
        "|---|---|---|---|",
    ]

    def cell(m: dict[str, float], key: str) -> str:
        return f"{m[key]:.3f} ± {m[key + '_std']:.3f}" if key in m else "-"

    for name, m in metrics["methods"].items():
        dapper = f"{m['rmse_analysis_dapper']:.3f}" if "rmse_analysis_dapper" in m else "-"
        lines.append(f"| {name} | {cell(m, 'rmse_analysis')} | {dapper} | {cell(m, 'rmse')} |")
    return "\n".join(lines) + "\n"

"""Figures of the emulation experiment: RMSE against lead, KE spectra, snapshots, learning curves."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from geodl.pipeline import StageContext

__all__ = ["write_emulation_report"]

STYLE = {
    "persistence": ("k", "--"),
    "coarse_sim": ("C2", "-."),
    "cnn": ("C0", "-"),
    "latent_ode": ("C1", "-"),
    "truth": ("k", "-"),
}


def write_emulation_report(ctx: StageContext) -> None:
    """``report/index.html`` with ``rmse_vs_lead.png``, ``ke_spectrum.png``, ``snapshots.png`` and
    the learning curves of each trained emulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["rmse_vs_lead.png", "ke_spectrum.png", "snapshots.png"]
    with xr.open_dataset(ctx.input("forecast.nc")) as f:
        names = [v[len("rmse_") :] for v in f.data_vars if v.startswith("rmse_")]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in names:
            color, ls = STYLE.get(name, ("C3", "-"))
            ax.plot(
                f[f"lead_{name}"].values, f[f"rmse_{name}"].values, color=color, ls=ls, label=name
            )
        ax.set_xlabel("lead (days)")
        ax.set_ylabel(f"RMSE of {metrics['variable']} (normalised)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(report_dir / "rmse_vs_lead.png", dpi=100)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for v in f.data_vars:
            if v.startswith("ke_spectrum_"):
                name = v[len("ke_spectrum_") :]
                color, ls = STYLE.get(name, ("C3", "-"))
                k = f[f"k_{name}"].values * 1e3 / (2 * np.pi)  # cycles per km
                ax.loglog(k, np.maximum(f[v].values, 1e-30), color=color, ls=ls, label=name)
        ax.set_xlabel("wavenumber (cycles / km)")
        ax.set_ylabel("KE spectrum (m$^3$ s$^{-2}$)")
        ax.set_title("long rollouts (second half) vs test truth")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(report_dir / "ke_spectrum.png", dpi=100)
        plt.close(fig)

        _snapshots(f, metrics, report_dir / "snapshots.png", plt)
    for method in ctx.cfg.methods:
        logs = ctx.run_dir / "logs" / method
        if logs.exists() and any(logs.rglob("metrics.csv")):
            name = f"learning_curves_{method}.png"
            plot_learning_curves(logs, report_dir / name, f"{method} training")
            figures.append(name)
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)


def _snapshots(f: xr.Dataset, metrics: dict[str, Any], out: Any, plt: Any) -> None:
    """Upper layer: initial state, truth at the last lead, each method's forecast there, and the
    last frame of each long rollout."""
    panels = [("initial", f["snapshot_initial"]), ("truth, last lead", f["snapshot_truth"])]
    panels += [
        (f"{v[len('snapshot_') :]}, last lead", f[v])
        for v in f.data_vars
        if v.startswith("snapshot_") and v not in ("snapshot_initial", "snapshot_truth")
    ]
    for v in f.data_vars:
        if v.startswith("rollout_"):
            name = v[len("rollout_") :]
            day = float(f[f"day_{name}"].values[-1])
            panels.append((f"{name} rollout, day {day:g}", f[v][-1]))
    lim = float(np.abs(f["snapshot_truth"].values[0]).max()) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), squeeze=False)
    for ax, (title, da) in zip(axes[0], panels, strict=True):
        ax.imshow(da.values[0], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"upper-layer {metrics['variable']}, first test forecast")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)

"""Figures and ``report/index.html`` of a dynamics run: attractor, error growth, learning curves."""

from __future__ import annotations

import json

import xarray as xr

from geodl.pipeline import StageContext

__all__ = ["write_dynamics_report"]


def write_dynamics_report(ctx: StageContext) -> None:
    """``report/index.html`` with ``attractor.png`` (a test trajectory against the long rollout),
    ``error_growth.png`` (forecast RMSE against lead in Lyapunov times) and the learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodl.report import plot_learning_curves, write_index

    report_dir = ctx.output("report")
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads(ctx.input("metrics.json").read_text())
    figures = ["attractor.png", "error_growth.png"]
    with (
        xr.open_dataset(ctx.input("trajectories.nc")) as t,
        xr.open_dataset(ctx.input("forecast.nc")) as f,
    ):
        test = t["test"].values[0]
        roll = f["rollout"].values
        j = 2 if test.shape[1] > 2 else 1
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
        axes[0].plot(test[:, 0], test[:, j], "k", lw=0.3)
        axes[0].set_title("truth (test trajectory)")
        axes[1].plot(roll[:, 0], roll[:, j], "C1", lw=0.3)
        left = int(f.attrs["left_attractor_at_step"])
        axes[1].set_title(
            "learned model, long rollout" + (f" (left at step {left})" if left >= 0 else "")
        )
        for ax in axes:
            ax.set_xlabel("x0")
        axes[0].set_ylabel(f"x{j}")
        fig.tight_layout()
        fig.savefig(report_dir / "attractor.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.semilogy(f["lead_lyapunov_times"].values[1:], f["forecast_rmse"].values[1:])
        ax.set_xlabel("lead time (Lyapunov times)")
        ax.set_ylabel("forecast RMSE")
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(report_dir / "error_growth.png", dpi=100)
        plt.close(fig)
    logs = ctx.run_dir / "logs" / "dynamics"
    if logs.exists() and any(logs.rglob("metrics.csv")):
        plot_learning_curves(logs, report_dir / "learning_curves.png", "dynamics training")
        figures.append("learning_curves.png")
    write_index(report_dir, ctx.cfg.experiment.name, metrics, figures)

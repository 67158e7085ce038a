"""``geodl`` command line: each command calls one public function.

User mistakes end with exit code 2 and one line on stderr; internal errors with exit code 1 (the
traceback only with ``--debug``); Ctrl-C with exit code 130.

Building the parser imports nothing heavy (no torch, Lightning or xarray): each command imports
what it needs when it runs, so ``geodl --help`` and ``geodl --version`` return at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from geodl import __version__
from geodl.errors import Terminated, UserInputError

__all__ = ["main"]


def _run_dir(cfg, out: str | None) -> Path:
    return Path(out) if out else Path("runs") / cfg.experiment.name


def _cmd_run(args: argparse.Namespace) -> int:
    from geodl.data.cluster import dask_client
    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    cfg, experiment = load_config(args.config, args.set)
    forced = [f for f in args.force if f != "*"]
    with dask_client(args.dask_workers, args.scheduler):
        result = run_experiment(
            cfg,
            experiment,
            _run_dir(cfg, args.out),
            only=getattr(args, "stage_name", None),
            force=forced,
            force_all="*" in args.force,
        )
    print(
        f"[geodl] {len(result.ran)} stage(s) ran, {len(result.skipped)} skipped; "
        f"outputs in {result.run_dir}"
    )
    if getattr(args, "stage_name", None) is None:  # `geodl run`, not one `geodl stage`
        _print_summary(Path(result.run_dir))
    return 0


def _print_summary(run_dir: Path) -> None:
    """The run's scores and where its report is, after a full run."""
    import json

    from geodl.report import metrics_table_text

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return
    table = metrics_table_text(metrics)
    if table:
        print(table)
    report = run_dir / "report" / "index.html"
    if report.exists():
        print(f"[geodl] report: {report}")


def _cmd_config_show(args: argparse.Namespace) -> int:
    from geodl.config import dump_yaml
    from geodl.tasks import load_config

    cfg, _ = load_config(args.config, args.set)
    print(dump_yaml(cfg), end="")
    return 0


def _cmd_config_validate(args: argparse.Namespace) -> int:
    from geodl.tasks import load_config

    for path in args.configs:
        load_config(path, args.set)
        print(f"{path}: ok")
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:
    from geodl.tasks import load_config

    cfg, experiment = load_config(args.config, args.set)
    for stage in experiment.resolve(cfg).stages:
        print(stage.name if not args.long else f"{stage.name}\t{','.join(stage.needs) or '-'}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from geodl.data import describe

    path = args.path if len(args.path) > 1 else args.path[0]
    print(describe(path))
    if args.target:
        from geodl.data import GriddedSource

        source = GriddedSource(
            path,
            args.target,
            inputs=args.inputs,
            static=args.static,
            land_mask=args.land_mask,
            require_regular=False,
        )
        print("roles:")
        print("\n".join("  " + line for line in source.summary().splitlines()))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from geodl.data.convert import convert, parse_chunks

    out = convert(
        args.src,
        args.dst,
        chunks=parse_chunks(args.chunks) if args.chunks else None,
        zarr_format=args.zarr_format,
        overwrite=args.overwrite,
        dask_workers=args.dask_workers,
        scheduler=args.scheduler,
    )
    print(f"[geodl] wrote {out}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from geodl.tasks.simulate import SIMULATE_CLI_OPTIONS, cli_options, simulate_to_file

    opts = cli_options(args, SIMULATE_CLI_OPTIONS)
    out = simulate_to_file(args.system, args.out, overwrite=args.overwrite, **opts)
    print(f"[geodl] wrote {out}")
    return 0


def _cmd_observe(args: argparse.Namespace) -> int:
    from geodl.tasks.simulate import OBSERVE_CLI_OPTIONS, cli_options, observe_to_file

    opts = cli_options(args, OBSERVE_CLI_OPTIONS)
    out = observe_to_file(
        args.kind, args.truth, args.variable, args.out, overwrite=args.overwrite, **opts
    )
    print(f"[geodl] wrote {out}")
    return 0


def _workers(text: str) -> int:
    """``--dask-workers N``: a whole number of workers, at least one."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of Dask workers >= 1, got {text!r}; leave the option out "
            "to run in process"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with the run contract's form of a usage error: one line and exit code 2 (instead
    of the usage block above it); ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"geodl: error: {self.prog}: {message}; see '{self.prog} --help'\n")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML scalar), e.g. --set train.epochs=5; repeatable",
    )
    run_opts = argparse.ArgumentParser(add_help=False)
    run_opts.add_argument("--out", help="run directory (default: runs/EXPERIMENT_NAME)")
    where = run_opts.add_mutually_exclusive_group()
    where.add_argument(
        "--dask-workers",
        type=_workers,
        metavar="N",
        help="run the stages' Dask computations (statistics, reading) on a LocalCluster of N workers",
    )
    where.add_argument(
        "--scheduler", help="run the stages' Dask computations on an existing Dask scheduler"
    )

    parser = _Parser(
        prog="geodl",
        description="Deep learning on gridded ocean and atmosphere data.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"geodl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run", parents=[common, overrides, run_opts], help="run every stage of an experiment"
    )
    p.add_argument("config", help="experiment YAML file")
    p.add_argument(
        "--force",
        nargs="?",
        const="*",
        action="append",
        default=[],
        metavar="STAGE",
        help="re-run STAGE and everything downstream; alone: re-run every stage (a run "
        "directory of another experiment is still refused)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "stage", parents=[common, overrides, run_opts], help="run one stage (for scripts, SLURM)"
    )
    p.add_argument("stage_name", metavar="NAME", help="stage name")
    p.add_argument("config", help="experiment YAML file")
    p.add_argument(
        "--force", action="store_const", const=["*"], default=[], help="re-run even if up to date"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("config", parents=[common], help="show or validate experiment configs")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("show", parents=[common, overrides], help="print the resolved config")
    c.add_argument("config")
    c.set_defaults(func=_cmd_config_show)
    c = csub.add_parser("validate", parents=[common, overrides], help="check config files")
    c.add_argument("configs", nargs="+")
    c.set_defaults(func=_cmd_config_validate)

    p = sub.add_parser(
        "stages", parents=[common, overrides], help="list an experiment's stages in order"
    )
    p.add_argument("config")
    p.add_argument("--long", action="store_true", help="also list each stage's upstream stages")
    p.set_defaults(func=_cmd_stages)

    p = sub.add_parser("info", parents=[common], help="summarise a NetCDF/Zarr file")
    p.add_argument("path", nargs="+", help="file(s), glob or Zarr store")
    p.add_argument("--target", action="append", default=[], help="check a target variable")
    p.add_argument("--inputs", action="append", default=[], help="an input variable")
    p.add_argument("--static", action="append", default=[], help="a static variable")
    p.add_argument("--land-mask", help="static variable, nonzero on land")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "convert", parents=[common], help="copy NetCDF/Zarr into a rechunked Zarr store"
    )
    p.add_argument("src", help="input file, glob or Zarr store")
    p.add_argument("dst", help="output *.zarr store (or *.nc file)")
    p.add_argument("--chunks", help="chunk sizes, e.g. time=30,y=240,x=240 (-1 = whole dim)")
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--dask-workers", type=_workers, metavar="N", help="run on a LocalCluster of N workers"
    )
    where.add_argument("--scheduler", help="run on an existing Dask scheduler (address)")
    p.set_defaults(func=_cmd_convert)

    from geodl.tasks.simulate_options import OBSERVE_CLI_OPTIONS, SIMULATE_CLI_OPTIONS

    p = sub.add_parser("simulate", parents=[common], help="run an embedded simulator to a file")
    p.add_argument("system", choices=("lorenz63", "lorenz96", "qg"))
    p.add_argument("--out", required=True, help="output file, *.nc or *.zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    for flag, kind, text in SIMULATE_CLI_OPTIONS:
        p.add_argument(flag, type=kind, help=text)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("observe", parents=[common], help="observe a simulated field (OSSE)")
    p.add_argument("kind", choices=("nadir", "swath", "clouds"))
    p.add_argument("--truth", required=True, help="NetCDF/Zarr file with the true field")
    p.add_argument("--variable", required=True, help="variable (time, y, x) to observe")
    p.add_argument("--out", required=True, help="output file, *.nc or *.zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    for flag, kind, text in OBSERVE_CLI_OPTIONS:
        p.add_argument(flag, type=kind, help=text)
    p.set_defaults(func=_cmd_observe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geodl`` command; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (its one line is printed)
        return exc.code if isinstance(exc.code, int) else 2
    debug = getattr(args, "debug", False)
    console = logging.StreamHandler()
    console.setLevel(logging.DEBUG if debug else logging.WARNING)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    previous = _on_sigterm()
    show = warnings.showwarning
    if not debug:  # one line per warning, not the source line behind it
        warnings.showwarning = _one_line_warning
    try:
        return _dispatch(args, debug)
    finally:
        warnings.showwarning = show
        logging.getLogger().removeHandler(console)  # main() may be called many times (tests)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line_warning(message: Any, category: Any, filename: str, lineno: int, *a: Any) -> None:
    print(f"geodl: warning: {message} ({category.__name__})", file=sys.stderr)


_TERMINATED: list[bool] = []


def _on_sigterm() -> Any:
    """SIGTERM (how SLURM and other schedulers stop a job) ends the run like Ctrl-C does, with its
    own message and exit code 143; returns the previous handler (None off the main thread)."""
    _TERMINATED.clear()

    def handler(signum: int, frame: Any) -> None:
        _TERMINATED.append(True)
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _dispatch(args: argparse.Namespace, debug: bool) -> int:
    try:
        return args.func(args)
    except UserInputError as exc:
        if debug:
            traceback.print_exc()
        print(f"geodl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _TERMINATED:
            print(
                "geodl: terminated (SIGTERM); resumable: the same command resumes training from "
                "its last checkpoint",
                file=sys.stderr,
            )
            return 143
        print("geodl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that reports internal errors
        if debug:
            traceback.print_exc()
        print(
            f"geodl: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the "
            "traceback, and report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Stage runner: ordering, cache keys, atomic outputs and the run manifest.

An experiment is an ordered list of :class:`Stage` objects. Each stage declares the config sections it
reads, the upstream stages it needs and the files it writes (relative to the run directory). Its cache
key hashes its config sections, its code version and the geodl version, the keys of its upstream stages
and fingerprints of its input files; a stage whose key is unchanged and whose outputs exist is skipped.

Why the geodl version is in every key: a stage's ``version`` is bumped by hand and is easily forgotten;
with the package version in the key, upgrading geodl re-runs every stage rather than reusing outputs
written by older code.

Why a record file per stage: the record (``.geodl/stages/NAME.json``) is deleted before a stage runs
and written only after every output has been renamed into place. A run killed at any point (SIGKILL,
Ctrl-C, power loss) therefore leaves the stage without a record, and the next run re-does it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from geodl.atomic import atomic_write_text, remove_path, replace_path
from geodl.config import config_digest, dump_yaml, read_yaml
from geodl.errors import RunDirError, Terminated, UserInputError

__all__ = ["Experiment", "RunResult", "Stage", "StageContext", "run_experiment"]

log = logging.getLogger("geodl")

STATE_DIR = ".geodl"


@dataclass
class StageContext:
    """What a stage function sees: the config, where to read inputs and where to write outputs."""

    name: str
    cfg: Any
    run_dir: Path
    work_dir: Path
    outputs: tuple[str, ...]
    readable: frozenset[str]
    key: str = ""
    log: logging.Logger = field(default_factory=lambda: log)

    def output(self, name: str) -> Path:
        """Path to write the declared output ``name`` (or a file inside a declared directory) to.

        The path lies in a private work directory; the runner renames it into the run directory when
        the stage succeeds.
        """
        if not any(name == o or name.startswith(o.rstrip("/") + "/") for o in self.outputs):
            raise RuntimeError(f"stage '{self.name}' did not declare output '{name}'")
        path = self.work_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def input(self, name: str) -> Path:
        """Path of an output of an upstream stage."""
        if not any(name == o or name.startswith(o.rstrip("/") + "/") for o in self.readable):
            raise RuntimeError(
                f"stage '{self.name}' reads '{name}', which no upstream stage writes"
            )
        return self.run_dir / name


@dataclass(frozen=True)
class Stage:
    """One step of an experiment.

    Parameters
    ----------
    name : stage name, used on the command line (``geodl stage NAME``).
    run : function of a :class:`StageContext`; writes every declared output.
    sections : config entries that form the stage's key: top-level sections (``"evaluate"``) or
        dotted paths into them (``"evaluate.methods"``). List exactly what the stage reads, so that
        changing a setting re-runs the stages that use it and no other.
    needs : upstream stages whose outputs it reads.
    outputs : files or directories it writes, relative to the run directory.
    external_inputs : function of the config giving user files the stage reads (fingerprinted).
    version : bump when the stage's code changes what it writes.
    """

    name: str
    run: Callable[[StageContext], None]
    sections: tuple[str, ...]
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    external_inputs: Callable[[Any], list[Path]] | None = None
    version: int = 1


@dataclass(frozen=True)
class Experiment:
    """A task's schema and ordered stages.

    ``stage_factory``, when given, builds the stages from the config (e.g. one training stage per
    learned method listed in it); :meth:`resolve` returns the experiment with those stages.
    """

    task: str
    schema: type[BaseModel]
    stages: tuple[Stage, ...] = ()
    stage_factory: Callable[[Any], tuple[Stage, ...]] | None = None

    def resolve(self, cfg: BaseModel) -> Experiment:
        """This experiment with its stages for ``cfg``."""
        if self.stage_factory is None:
            return self
        return Experiment(task=self.task, schema=self.schema, stages=self.stage_factory(cfg))

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for stage in self.stages:
            missing = [n for n in stage.needs if n not in seen]
            if missing:
                raise RuntimeError(f"stage '{stage.name}' needs {missing} before it")
            seen.add(stage.name)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        names = ", ".join(s.name for s in self.stages)
        raise UserInputError(f"unknown stage '{name}' for task '{self.task}'; stages: {names}")

    def downstream(self, names: Iterable[str]) -> set[str]:
        """``names`` and every stage that depends on them, directly or not."""
        out = set(names)
        for stage in self.stages:
            if out.intersection(stage.needs):
                out.add(stage.name)
        return out


@dataclass
class RunResult:
    run_dir: Path
    ran: list[str]
    skipped: list[str]
    manifest: dict[str, Any]


def fingerprint(path: Path) -> list[Any]:
    """Cheap fingerprint of a file or directory tree: relative names, sizes and mtimes."""
    path = Path(path)
    if not path.exists():
        return [str(path), None]
    if path.is_file():
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            entries.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    return [str(path), entries]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _geodl_version() -> str:
    """Version of the installed geodl package (what the manifest records and every key holds)."""
    return importlib.metadata.version("geodl")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Versions and hardware recorded in every manifest."""
    import numpy
    import torch
    import xarray

    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    return {
        "geodl": _geodl_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "xarray": xarray.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "git_commit": _git_commit(),
    }


def _identity(cfg: BaseModel) -> dict[str, str]:
    exp = cfg.experiment  # type: ignore[attr-defined]
    return {"name": exp.name, "task": exp.task}


def prepare_run_dir(run_dir: Path, cfg: BaseModel) -> None:
    """Create ``run_dir``, check it is writable and belongs to this experiment, write config.yaml.

    The directory must be new, empty, or a geodl run of the same experiment (its ``config.yaml``
    names the same experiment and task): a folder of other files is refused, untouched.

    Why no override: ``--force`` re-runs stages; it never lets one experiment overwrite the config,
    outputs and metrics of another. Reusing such a directory takes an explicit deletion.
    """
    run_dir = Path(run_dir)
    old_cfg = run_dir / "config.yaml"
    if run_dir.is_dir():  # before writing anything in it, even a probe
        _check_owner(run_dir, cfg)
    elif run_dir.exists():
        raise RunDirError(
            f"output directory '{run_dir}' is a file, not a directory; choose a new or empty "
            "--out DIR"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"output directory '{run_dir}' is not writable ({exc.strerror}); "
            "choose another with --out DIR"
        ) from None
    atomic_write_text(old_cfg, dump_yaml(cfg))
    (run_dir / STATE_DIR / "stages").mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)


def _check_owner(run_dir: Path, cfg: BaseModel) -> None:
    """Refuse an existing ``run_dir`` that is neither empty nor a run of this experiment."""
    old_cfg = run_dir / "config.yaml"
    try:
        holds_files = any(run_dir.iterdir())
    except OSError as exc:
        raise RunDirError(
            f"output directory '{run_dir}' cannot be read ({exc.strerror}); "
            "choose another with --out DIR"
        ) from None
    if not old_cfg.exists() and holds_files:
        raise RunDirError(
            f"output directory '{run_dir}' holds files and is not a geodl run (no config.yaml); "
            "geodl never writes among other files: choose a new or empty --out DIR"
        )
    if old_cfg.exists():
        try:
            old = read_yaml(old_cfg).get("experiment", {})
        except UserInputError:
            old = {}
        new = _identity(cfg)
        old_id = {"name": old.get("name"), "task": old.get("task")}
        if old_id != new:
            raise RunDirError(
                f"run directory '{run_dir}' holds experiment {old_id['name']!r} "
                f"(task {old_id['task']!r}), not {new['name']!r} (task {new['task']!r}); "
                "use another --out DIR, or delete that directory to reuse it"
            )


def process_rank() -> int:
    """Global rank of this process in a multi-process launch (torchrun, srun), else 0.

    Every rank runs a training stage's function (DDP needs them all); only rank 0 moves outputs into
    the run directory and writes stage records and the manifest.
    """
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var)
        if value is not None and (
            var != "SLURM_PROCID" or int(os.environ.get("SLURM_NTASKS", 1)) > 1
        ):
            return int(value)
    return 0


def _record_path(run_dir: Path, name: str) -> Path:
    return run_dir / STATE_DIR / "stages" / f"{name}.json"


def _read_record(run_dir: Path, name: str) -> dict[str, Any] | None:
    path = _record_path(run_dir, name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _config_entry(dumped: dict[str, Any], path: str, stage: str) -> Any:
    """The value at dotted ``path`` (``"evaluate.enkf.inflation"``) of a dumped config."""
    value: Any = dumped
    for i, part in enumerate(path.split(".")):
        if not isinstance(value, dict) or part not in value:
            where = ".".join(path.split(".")[:i]) or "the config"
            raise RuntimeError(  # a wrong Stage declaration: a bug, not user input
                f"stage '{stage}' declares section '{path}', but {where} has no entry '{part}'"
            )
        value = value[part]
    return value


def check_files(cfg: BaseModel, stages: Iterable[Stage]) -> None:
    """Before any of ``stages`` runs: each config section that they declare and that names
    user files (a section with a ``check_files()`` method, e.g. ``obs`` of ``kind: file``)
    checks that its files are there, in one :class:`UserInputError` line.

    Why here and not at validation: a config is validated (``geodl config validate``, a SLURM
    submission) where its data may not exist yet; only the stages that read a section need its
    files, when they are about to run."""
    seen: set[str] = set()
    for stage in stages:
        for path in stage.sections:
            if path in seen:
                continue
            seen.add(path)
            value: Any = cfg
            for part in path.split("."):
                value = getattr(value, part, None)
            check = getattr(value, "check_files", None)
            if isinstance(value, BaseModel) and callable(check):
                check()


def stage_key(stage: Stage, cfg: BaseModel, run_dir: Path, upstream: dict[str, str]) -> str:
    """Cache key: stage name/version, geodl version, its config sections, upstream keys, input
    fingerprints. ``upstream`` maps each of ``stage.needs`` to that stage's token."""
    dumped = cfg.model_dump(mode="json")
    inputs = [fingerprint(p) for p in (stage.external_inputs(cfg) if stage.external_inputs else [])]
    return config_digest(
        {
            "stage": stage.name,
            "version": stage.version,
            "geodl": _geodl_version(),
            "sections": {s: _config_entry(dumped, s, stage.name) for s in stage.sections},
            "upstream": {n: upstream[n] for n in stage.needs},
            "inputs": inputs,
        }
    )


def _add_file_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "logs" / "geodl.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("geodl").addHandler(handler)
    logging.getLogger("geodl").setLevel(logging.DEBUG)
    return handler


def _write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    if process_rank() != 0:
        return
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def run_experiment(
    cfg: BaseModel,
    experiment: Experiment,
    run_dir: str | Path,
    *,
    only: str | None = None,
    force: Iterable[str] = (),
    force_all: bool = False,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run (or skip) every stage of ``experiment``, or only stage ``only``.

    Parameters
    ----------
    cfg : validated config of ``experiment.schema``.
    run_dir : run directory; created if needed.
    only : run just this stage (its upstream stages must have run before).
    force : stage names to re-run, with everything downstream of them.
    force_all : re-run every stage. A run directory of another experiment is refused all the same.
    echo : where progress lines go.
    """
    run_dir = Path(run_dir)
    experiment = experiment.resolve(cfg)
    force = list(force)
    for name in force:
        experiment.stage(name)  # validates the name
    selected = [experiment.stage(only)] if only else list(experiment.stages)
    check_files(cfg, selected)  # a missing obs.path file fails now, not after the simulation
    from geodl.training.spec import check_config_hardware  # imports Lightning: only when running

    check_config_hardware(cfg)  # a GPU request this machine cannot serve fails before any stage
    from geodl.training.threads import restore_threads, set_threads

    threads = set_threads(getattr(getattr(cfg, "experiment", None), "threads", None))
    prepare_run_dir(run_dir, cfg)
    handler = _add_file_log(run_dir)

    old_manifest: dict[str, Any] = {}
    if (run_dir / "manifest.json").exists():
        try:
            old_manifest = json.loads((run_dir / "manifest.json").read_text())
        except ValueError:
            old_manifest = {}
    entries: dict[str, dict[str, Any]] = {
        e["name"]: e for e in old_manifest.get("stages", []) if only and "name" in e
    }
    manifest: dict[str, Any] = {
        "experiment": _identity(cfg)["name"],
        "task": experiment.task,
        "config_digest": config_digest(cfg.model_dump(mode="json")),
        "command": "stage " + only if only else "run",
        "started": _now(),
        "finished": None,
        "status": "running",
        "stages": [],
        "environment": {
            **environment(),
            **{k: v for k, v in threads.items() if k != "threads_before"},
        },
    }

    dirty = experiment.downstream(force) if force else set()
    keys: dict[str, str] = {}
    ran: list[str] = []
    skipped: list[str] = []
    current: str | None = None
    try:
        for stage in experiment.stages:
            current = stage.name
            record = _read_record(run_dir, stage.name)
            if stage not in selected:
                if record is not None:
                    keys[stage.name] = _token(record)
                continue
            for need in stage.needs:
                if need not in keys:
                    raise UserInputError(
                        f"stage '{stage.name}' needs the outputs of stage '{need}', which has not "
                        f"run in '{run_dir}'; run `geodl stage {need} ...` first"
                    )
            key = stage_key(stage, cfg, run_dir, keys)
            outputs_exist = all((run_dir / o).exists() for o in stage.outputs)
            fresh = record is not None and record.get("key") == key and outputs_exist
            if fresh and not force_all and stage.name not in dirty:
                skipped.append(stage.name)
                entries[stage.name] = {
                    "name": stage.name,
                    "key": key,
                    "status": "skipped",
                    "started": None,
                    "ended": None,
                    "duration_s": 0.0,
                }
                keys[stage.name] = _token(record)
                echo(f"[geodl] {stage.name}: skipped (cache key {key[:12]} unchanged)")
                log.info("stage %s skipped, key %s", stage.name, key)
                continue
            entry, record = _run_stage(stage, cfg, run_dir, key, experiment, echo)
            keys[stage.name] = _token(record)  # new run id: everything downstream is stale
            entries[stage.name] = entry
            ran.append(stage.name)
            manifest["stages"] = [entries[s.name] for s in experiment.stages if s.name in entries]
            _write_manifest(run_dir, manifest)
        manifest["status"] = "complete"
    except KeyboardInterrupt as stop:
        reason = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        manifest["status"] = "interrupted"
        manifest["error"] = {"stage": current, "reason": reason}
        log.info("run interrupted in stage %s", current)  # the CLI prints the one line
        raise
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = {"stage": current, "reason": f"{type(exc).__name__}: {exc}"}
        log.info("stage %s failed: %s: %s", current, type(exc).__name__, exc)
        raise
    finally:
        manifest["finished"] = _now()
        manifest["stages"] = [entries[s.name] for s in experiment.stages if s.name in entries]
        _write_manifest(run_dir, manifest)
        logging.getLogger("geodl").removeHandler(handler)
        handler.close()
        restore_threads(threads)
    return RunResult(run_dir=run_dir, ran=ran, skipped=skipped, manifest=manifest)


def _run_stage(
    stage: Stage,
    cfg: BaseModel,
    run_dir: Path,
    key: str,
    experiment: Experiment,
    echo: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    record_path = _record_path(run_dir, stage.name)
    if process_rank() == 0:
        record_path.unlink(missing_ok=True)  # from now on the stage counts as not done
    work_dir = run_dir / STATE_DIR / "tmp" / f"{stage.name}-{uuid.uuid4().hex[:8]}"
    work_dir.mkdir(parents=True)
    readable = frozenset(
        o for s in experiment.stages if s.name in _ancestors(experiment, stage) for o in s.outputs
    )
    ctx = StageContext(
        name=stage.name,
        cfg=cfg,
        run_dir=run_dir,
        work_dir=work_dir,
        outputs=stage.outputs,
        readable=readable,
        key=key,
    )
    echo(f"[geodl] {stage.name}: running")
    log.info("stage %s started, key %s", stage.name, key)
    started = _now()
    t0 = time.perf_counter()
    try:
        stage.run(ctx)
        if process_rank() != 0:
            echo(f"[geodl] {stage.name}: rank {process_rank()} done; rank 0 keeps the outputs")
            return {"name": stage.name, "key": key, "status": "ran"}, {"key": key}
        missing = [o for o in stage.outputs if not (work_dir / o).exists()]
        if missing:
            raise RuntimeError(f"stage '{stage.name}' finished without writing {missing}")
        for out in stage.outputs:
            replace_path(work_dir / out, run_dir / out)
    except KeyboardInterrupt:
        echo(f"[geodl] {stage.name}: interrupted; nothing was kept, re-run to redo this stage")
        raise
    finally:
        remove_path(work_dir)
    duration = time.perf_counter() - t0
    record = {
        "key": key,
        "run_id": uuid.uuid4().hex,
        "outputs": list(stage.outputs),
        "finished": _now(),
    }
    atomic_write_text(record_path, json.dumps(record) + "\n")
    echo(f"[geodl] {stage.name}: done in {duration:.1f} s")
    log.info("stage %s done in %.2f s", stage.name, duration)
    entry = {
        "name": stage.name,
        "key": key,
        "status": "ran",
        "started": started,
        "ended": _now(),
        "duration_s": round(duration, 3),
    }
    return entry, record


def _token(record: dict[str, Any]) -> str:
    """What downstream keys depend on: the upstream key and the id of the run that wrote it."""
    return f"{record['key']}:{record.get('run_id', '')}"


def _ancestors(experiment: Experiment, stage: Stage) -> set[str]:
    out: set[str] = set()
    todo = list(stage.needs)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(experiment.stage(name).needs)
    return out

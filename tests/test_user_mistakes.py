"""The new-user mistake audit, kept as a table: each row is one mistake a user makes with the
``geodl`` command (config files, ``--set``, data files, run directories, the file commands), and
must end with exit code 2 and one line ``geodl: error: ...`` that names what was wrong, with no
traceback and before any stage has finished (DESIGN.md, run contract).

Every row runs the CLI in process (:func:`geodl.cli.main`). Rows that need files build them from
the tiny factories of :mod:`geodl.testing` once per module (``{D}``) or per row (``{T}``); the
quick configs are the shipped ``configs/*_quick.yaml``. Some rows repeat, in their command-line
form, a case that a module test checks closer to the code (named in the section comments).

Left out on purpose, as legal: numbers in ``split`` on a calendar time axis (days since the first
time), a training period after the test period (a warning), ``report.days`` beyond the test period
of a user's file (a warning, the last day is shown).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from geodl.cli import main
from geodl.testing import gaussian_twin, make_field

REPO = Path(__file__).resolve().parents[1]
MAP = str(REPO / "configs" / "ssh_mapping_quick.yaml")
L63DA = str(REPO / "configs" / "l63_assimilation_quick.yaml")
L96DA = str(REPO / "configs" / "l96_assimilation_quick.yaml")
DYN = str(REPO / "configs" / "l63_dynamics_quick.yaml")
EMU = str(REPO / "configs" / "qg_emulation_quick.yaml")

#: A mapping experiment on a user file ``{D}/twin.nc`` (numeric time axis in days, projected
#: y/x grid) with gridded observations ``{D}/obs.nc``: the base of the data-file rows.
FILE_MAP = """experiment: {name: audit, task: mapping}
data: {path: {D}/twin.nc, variable: ssh}
obs: {kind: file, path: {D}/obs.nc, variable: ssh, noise_std: 0.05}
split: {train: [0, 89], val: [95, 104], test: [110, 119]}
patch: {time: 4, y: 16, x: 16}
methods: [oi]
report: {days: [0]}
"""

#: The same on ``{D}/dated.nc`` (CF dates, lat/lon grid), observed through simulated clouds.
DATED_MAP = """experiment: {name: audit_dated, task: mapping}
data: {path: {D}/dated.nc, variable: ssh}
obs: {kind: clouds, cover: 0.5}
split: {train: [2020-01-01, 2020-01-30], val: [2020-02-05, 2020-02-14], test: [2020-02-20, 2020-02-29]}
patch: {time: 4, y: 16, x: 16}
methods: [oi]
report: {days: [0]}
"""


#: The simulated twin (tiny: 16 x 16, 40 days, no spin-up) observed from files ``{T}/l3/*.nc``.
TWIN_FILE_OBS = """experiment: {name: audit_twin, task: mapping}
simulate: {nx: 16, days: 40, spinup_days: 0}
obs: {kind: file, path: '{T}/l3/*.nc', variable: ssh}
split: {train: [0, 19], val: [24, 29], test: [34, 39]}
patch: {time: 4, y: 16, x: 16}
methods: [oi]
report: {days: [0]}
"""


@dataclass(frozen=True)
class Mistake:
    """One row: the command line (``{D}`` the module's data folder, ``{T}`` the row's own
    folder, ``{C}`` the row's config ``{T}/c.yaml``), the fragments its error line must hold,
    and what the row writes first: the config ``{C}`` (``text``, or ``edit`` =
    (source, old, new) on a shipped config) and other files (``setup``). ``once``: fragments
    the line must hold exactly once (a value shown twice is noise)."""

    argv: tuple[str, ...]
    expected: tuple[str, ...]
    text: str | None = None
    edit: tuple[str, str, str] | None = None
    setup: Callable[[Path, Path], None] | None = None
    once: tuple[str, ...] = ()


def row(
    id: str,
    argv: str | list[str],
    *expected: str,
    text: str | None = None,
    edit: tuple[str, str, str] | None = None,
    setup: Callable[[Path, Path], None] | None = None,
    once: tuple[str, ...] = (),
) -> Any:
    """A row of the table, ``argv`` split on spaces when it is one string."""
    args = tuple(argv.split()) if isinstance(argv, str) else tuple(argv)
    return pytest.param(Mistake(args, expected, text, edit, setup, once), id=id)


def run_on(config: str, *sets: str, cmd: str = "config validate") -> list[str]:
    """``geodl CMD CONFIG --set S ...`` as argv (``run`` also gets ``--out {T}/run``)."""
    out = ["--out", "{T}/run"] if cmd == "run" else []
    return [*cmd.split(), config, *out, *(x for s in sets for x in ("--set", s))]


# ----- files the rows read -------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mistakes")
    truth, obs = gaussian_twin(nt=120, n=16)
    truth.to_netcdf(d / "twin.nc")
    obs.to_netcdf(d / "obs.nc")
    dated = make_field(nt=60, ny=16, nx=24, land=False)
    dated.to_netcdf(d / "dated.nc")
    # a level dimension the target has to lose first
    ssh = dated["ssh"]
    dated.assign(ssh=ssh.expand_dims(depth=[0.0, 10.0], axis=1)).to_netcdf(d / "levels.nc")
    # a grid whose axes have no coordinate values
    dated.drop_vars(["lat", "lon"]).to_netcdf(d / "nocoords.nc")
    # a curvilinear grid: 2-D nav_lat / nav_lon on (y, x), as NEMO writes them
    yy, xx = np.meshgrid(np.arange(16.0), np.arange(24.0), indexing="ij")
    xr.Dataset(
        {"ssh": (("time", "y", "x"), ssh.values)},
        coords={
            "time": dated["time"].values,
            "nav_lat": (("y", "x"), 30 + 0.25 * yy + 0.01 * xx, {"units": "degrees_north"}),
            "nav_lon": (("y", "x"), -60 + 0.25 * xx, {"units": "degrees_east"}),
        },
    ).to_netcdf(d / "curvilinear.nc")
    # the same day twice in the time axis
    t = dated["time"].values.copy()
    t[5] = t[4]
    dated.assign_coords(time=t).to_netcdf(d / "duptime.nc")
    # a longitude written twice (a stitched product)
    lon = dated["lon"].values.copy()
    lon[7] = lon[6]
    dated.assign_coords(lon=lon).to_netcdf(d / "duplon.nc")
    (d / "notes.txt").write_text("station log, not a NetCDF file\n")
    (d / "notes.nc").write_text("a text file named .nc\n")
    (d / "folder").mkdir()
    (d / "folder" / "readme.txt").write_text("a plain folder\n")
    return d


def _user_folder(tmp: Path, data: Path) -> None:
    """A folder of the user's own files, given as --out."""
    folder = tmp / "mine"
    folder.mkdir()
    (folder / "obs.nc").write_bytes(b"my observations")
    (folder / "metrics.json").write_text("{}")
    (folder / "config.yml").write_text("my notes\n")
    (folder / "logs").mkdir()
    (folder / "logs" / "cruise.log").write_text("day 1\n")


def _other_run(tmp: Path, data: Path) -> None:
    """A run directory of another experiment (what ``geodl run`` writes before its stages)."""
    from geodl.pipeline import prepare_run_dir
    from geodl.tasks import load_config

    cfg, _ = load_config(DYN)
    prepare_run_dir(tmp / "run", cfg)


def _existing(name: str) -> Callable[[Path, Path], None]:
    def write(tmp: Path, data: Path) -> None:
        (tmp / name).write_bytes(b"the user's own file")

    return write


BAD_SET = "geodl: error: --set"

# ----- the table -----------------------------------------------------------------------------
ROWS = [
    # --- the config file itself (test_cli, test_config test some of these closer to the code)
    row("config-missing", "run {T}/none.yaml --out {T}/run", "none.yaml", "not found"),
    row("config-is-a-directory", "config validate {T}", "is a directory"),
    row(
        "yaml-unclosed-bracket",
        "run {C} --out {T}/run",
        "c.yaml",
        "YAML syntax error at line 4",
        text="experiment:\n  name: x\n  task: [mapping\nsplit: {}\n",
    ),
    row(
        "yaml-tab-indent",
        "config validate {C}",
        "c.yaml",
        "YAML syntax error",
        text="experiment:\n\tname: x\n\ttask: dynamics\n",
    ),
    row(
        "yaml-top-level-list",
        "config show {C}",
        "c.yaml",
        "expected a mapping of sections",
        text="- experiment\n- dynamics\n",
    ),
    row(
        "config-is-a-netcdf-file",
        "run {D}/twin.nc --out {T}/run",
        "twin.nc",
        "not UTF-8 text",
    ),
    row(
        "config-not-utf8",
        "config validate {C}",
        "c.yaml",
        "not UTF-8 text",
        setup=lambda tmp, data: (tmp / "c.yaml").write_bytes(
            b"experiment: {name: caf\xe9, task: dynamics}\n"
        ),
    ),
    row(
        "yaml-section-twice",
        "run {C} --out {T}/run",
        "c.yaml",
        "key 'train' is given twice",
        edit=(DYN, "train:\n", "train:\n  lr: 0.1\ntrain:\n"),
    ),
    row(
        "yaml-key-twice-in-a-flow-mapping",
        "config validate {C}",
        "key 'max_epochs' is given twice",
        edit=(EMU, "max_epochs: 10,", "max_epochs: 10, max_epochs: 3,"),
    ),
    row(
        "config-validate-second-file-missing",
        ["config", "validate", DYN, "{T}/none.yaml"],
        "none.yaml",
        "not found",
    ),
    row("stages-missing-config", "stages {T}/none.yaml", "none.yaml", "not found"),
    row("yaml-empty-file", "config validate {C}", "c.yaml", "experiment.task", text=""),
    row(
        "unknown-task",
        "config validate {C}",
        "experiment.task",
        "'mapp'",
        "mapping",
        text="experiment: {name: x, task: mapp}\n",
    ),
    row(
        "set-task-to-another-kind",
        run_on(MAP, "experiment.task=dynamics"),
        BAD_SET + " experiment.task=dynamics",
        "experiment.task cannot be changed by --set",
        "task 'mapping'",
    ),
    row(
        "set-experiment-to-a-value",
        run_on(DYN, "experiment=5"),
        BAD_SET + " experiment=5",
        "key 'experiment'",
        "expected a section",
    ),
    row(
        "experiment-not-a-section",
        "config validate {C}",
        "experiment.task",
        text="experiment: dynamics\n",
    ),
    # --- unknown keys and wrong types, in the file and with --set (test_config: the messages)
    row(
        "file-unknown-top-level-key",
        "run {C} --out {T}/run",
        "c.yaml",
        "unknown key 'trian'",
        "did you mean 'train'",
        edit=(DYN, "train:", "trian:"),
    ),
    row(
        "file-unknown-nested-key",
        "config validate {C}",
        "c.yaml",
        "unknown key 'train.max_epoch'",
        "did you mean 'max_epochs'",
        edit=(DYN, "max_epochs:", "max_epoch:"),
    ),
    row(
        "file-unknown-key-in-method-section",
        "config validate {C}",
        "c.yaml",
        "unknown key 'cnn.widht'",
        "did you mean 'width'",
        edit=(EMU, "  width: 32", "  widht: 32"),
    ),
    row(
        "file-wrong-type",
        "config validate {C}",
        "c.yaml",
        "key 'train.max_epochs'",
        "'five'",
        edit=(DYN, "max_epochs: 5", "max_epochs: five"),
    ),
    row(
        "file-quoted-number",
        "config validate {C}",
        "c.yaml",
        "key 'observe.every'",
        "'8'",
        edit=(L63DA, "every: 8", "every: '8'"),
    ),
    row(
        "file-list-for-a-number",
        "config validate {C}",
        "key 'simulate.nx'",
        edit=(EMU, "nx: 32", "nx: [32, 32]"),
    ),
    row(
        "file-section-given-a-value",
        "config validate {C}",
        "c.yaml",
        "key 'train'",
        "expected a section",
        text="experiment: {name: x, task: dynamics}\ntrain: 5\n",
    ),
    row(
        "file-empty-section",
        "config validate {C}",
        "key 'train'",
        "expected a section",
        text="experiment: {name: x, task: dynamics}\ntrain:\n",
    ),
    row(
        "set-unknown-top-level-key",
        run_on(DYN, "trian.max_epochs=3", cmd="run"),
        BAD_SET,
        "unknown key 'trian'",
        "did you mean 'train'",
    ),
    row(
        "set-unknown-nested-key",
        run_on(EMU, "cnn.widht=8"),
        BAD_SET,
        "unknown key 'widht' in cnn",
        "did you mean 'width'",
    ),
    row(
        "set-wrong-type",
        run_on(DYN, "train.max_epochs=five"),
        BAD_SET + " train.max_epochs=five",
        "train.max_epochs",
    ),
    row(
        "set-wrong-type-nested-section",
        run_on(MAP, "unet.train.lr=fast"),
        BAD_SET + " unet.train.lr=fast",
        "unet.train.lr",
    ),
    row(
        "set-out-of-range",
        run_on(L96DA, "simulate.n_components=2", cmd="config show"),
        BAD_SET + " simulate.n_components=2",
        "simulate.n_components",
    ),
    row("set-without-equals", run_on(DYN, "train.max_epochs"), BAD_SET, "KEY.PATH=VALUE"),
    row("set-empty-key", run_on(DYN, "=3"), BAD_SET, "KEY.PATH=VALUE"),
    row(
        "set-into-a-value",
        run_on(DYN, "experiment.name.x=1"),
        BAD_SET,
        "'experiment.name' is a value, not a section",
    ),
    row("set-bad-yaml-value", run_on(DYN, "train.lr=[1,"), BAD_SET, "not a valid YAML"),
    row(
        "set-wrong-type-on-file-with-good-value",
        run_on(L63DA, "observe.every=-3", cmd="run"),
        BAD_SET + " observe.every=-3",
        "observe.every",
    ),
    # --- YAML 1.1 surprises: 'no'/'on' are text (YAML 1.2), so a string key keeps them
    row(
        "yaml11-on-for-a-choice",
        "config validate {C}",
        "c.yaml",
        "key 'obs.kind'",
        "'on'",
        edit=(MAP, "kind: nadir", "kind: on"),
    ),
    row(
        "yaml11-no-as-variable-name",
        "run {C} --out {T}/run",
        "variable 'no' not found",
        "ssh",
        text=FILE_MAP.replace("variable: ssh}", "variable: no}", 1),
    ),
    row(
        "yaml11-no-for-a-boolean",
        "config validate {C}",
        "c.yaml",
        "key 'train.progress_bar'",
        "'no'",
        "true and false",
        edit=(DYN, "progress_bar: false", "progress_bar: no"),
    ),
    # --- splits (test_mapping_config_checks: overlap, backwards on the mapping task)
    row(
        "split-unquoted-dates-on-the-twin",
        "config validate {C}",
        "split.train",
        "gives dates",
        edit=(MAP, "train: [0, 539]", "train: [2010-01-01, 2011-06-30]"),
    ),
    row(
        "split-overlap-unquoted-dates",
        "run {C} --out {T}/run",
        "split.train",
        "split.val",
        "overlap",
        text=DATED_MAP.replace("val: [2020-02-05", "val: [2020-01-25"),
    ),
    row(
        "split-backwards",
        run_on(MAP, "split.val=[628, 569]", cmd="run"),
        BAD_SET + " split.val",
        "ends before it starts",
    ),
    row(
        "split-one-value",
        run_on(MAP, "split.test=[658]"),
        BAD_SET + " split.test=[658]",
        "expected at least 2 items",
    ),
    row(
        "split-beyond-the-twin",
        run_on(MAP, "split.test=[658, 900]", cmd="run"),
        BAD_SET + " split.test=[658, 900]",
        "outside the simulated twin's days 0 .. 729",
    ),
    row(
        "split-before-the-twin",
        run_on(MAP, "split.train=[-30, 539]", cmd="run"),
        BAD_SET + " split.train=[-30, 539]",
        "days 0 .. 729",
    ),
    row(
        "split-beyond-the-file",
        "run {C} --out {T}/run",
        "split.test",
        "outside the data",
        "119",
        text=FILE_MAP.replace("test: [110, 119]", "test: [110, 200]"),
    ),
    row(
        "split-dates-on-a-numeric-time-axis",
        "run {C} --out {T}/run",
        "split",
        "2020-01-01",
        text=FILE_MAP.replace(
            "split: {train: [0, 89], val: [95, 104], test: [110, 119]}",
            "split: {train: [2020-01-01, 2020-03-01], val: [2020-03-05, 2020-03-20], "
            "test: [2020-03-25, 2020-04-20]}",
        ),
    ),
    row(
        "split-shorter-than-a-window",
        run_on(MAP, "split.val=[569, 580]"),
        BAD_SET + " split.val=[569, 580]",
        "split.val",
        "shorter than patch.time",
    ),
    row(
        "emulation-splits-too-short-for-the-rollout",
        run_on(EMU, "simulate.val_days=2", cmd="run"),
        BAD_SET + " simulate.val_days=2",
        "val_days",
    ),
    # --- data files (tests/data/test_data_open: the source's own checks)
    row(
        "data-missing-file",
        run_on("{C}", "data.path={T}/nope.nc", cmd="run"),
        "nope.nc",
        "not found",
        text=FILE_MAP,
    ),
    row(
        "data-is-a-directory",
        run_on("{C}", "data.path={D}/folder", cmd="run"),
        "folder",
        "directory",
        text=FILE_MAP,
    ),
    row(
        "data-is-a-text-file",
        run_on("{C}", "data.path={D}/notes.txt", cmd="run"),
        "notes.txt",
        "no NetCDF or HDF5 header",
        text=FILE_MAP,
    ),
    row(
        "data-text-file-named-nc",
        run_on("{C}", "data.path={D}/notes.nc", cmd="run"),
        "notes.nc",
        "no NetCDF or HDF5 header",
        text=FILE_MAP,
    ),
    row(
        "data-glob-matching-nothing",
        run_on("{C}", "data.path={D}/ssh_1999_*.nc", cmd="run"),
        "ssh_1999_*.nc",
        "no file matches",
        text=FILE_MAP,
    ),
    row(
        "data-missing-variable",
        run_on("{C}", "data.variable=sla", cmd="run"),
        "variable 'sla' not found",
        "ssh",
        text=FILE_MAP,
    ),
    row(
        "data-2d-variable",
        run_on("{C}", "data.variable=depth", cmd="run"),
        "variable 'depth' has dims",
        text=FILE_MAP,
    ),
    row(
        "data-extra-dim",
        run_on("{C}", "data.path={D}/levels.nc", cmd="run"),
        "depth",
        "select one level",
        text=DATED_MAP,
    ),
    row(
        "data-all-nan",
        run_on("{C}", "data.variable=dead", cmd="run"),
        "'dead'",
        "NaN everywhere",
        text=FILE_MAP,
    ),
    row(
        "data-grid-without-coordinates",
        run_on("{C}", "data.path={D}/nocoords.nc", cmd="run"),
        "no coordinate values",
        "data.grid_spacing_km",
        text=DATED_MAP,
    ),
    row(
        "data-grid-spacing-with-coordinates",
        run_on("{C}", "data.grid_spacing_km=25", cmd="run"),
        "have coordinate values",
        "remove data.grid_spacing_km",
        text=DATED_MAP,
    ),
    row(
        "data-grid-spacing-not-positive",
        run_on("{C}", "data.path={D}/nocoords.nc", "data.grid_spacing_km=[10, 0]", cmd="run"),
        "data.grid_spacing_km",
        "positive number of km",
        "got [10, 0]",
        text=DATED_MAP,
    ),
    row(
        "data-grid-spacing-on-the-twin",
        run_on(MAP, "data.grid_spacing_km=10"),
        "data.grid_spacing_km needs data.path",
    ),
    row(
        "data-curvilinear-grid",
        run_on("{C}", "data.path={D}/curvilinear.nc", cmd="run"),
        "curvilinear grid",
        "nav_lat",
        text=DATED_MAP,
    ),
    row(
        "data-duplicated-time",
        run_on("{C}", "data.path={D}/duptime.nc", cmd="run"),
        "time",
        "duplicated",
        text=DATED_MAP,
    ),
    row(
        "data-duplicated-longitude",
        run_on("{C}", "data.path={D}/duplon.nc", cmd="run"),
        "lon",
        "duplicated",
        text=DATED_MAP,
    ),
    row(
        "data-inputs-without-a-file",
        run_on(MAP, "data.inputs=[sst]"),
        BAD_SET + " data.inputs=[sst]",
        "data.inputs/static",
        "need data.path",
    ),
    row(
        "data-land-mask-on-the-twin",
        run_on(MAP, "data.land_mask=mask", cmd="run"),
        BAD_SET + " data.land_mask=mask",
        "needs data.path",
    ),
    row(
        "dynamics-data-missing-file",
        run_on(DYN, "data.path={T}/traj.nc", cmd="run"),
        "traj.nc",
        "not found",
    ),
    row(
        "assimilation-data-is-a-gridded-file",
        run_on(L63DA, "data.path={D}/twin.nc", cmd="run"),
        "twin.nc",
    ),
    # --- observations from files (test_alongtrack_l3: the reader's checks)
    row(
        "obs-file-without-path",
        run_on(MAP, "obs.kind=file"),
        BAD_SET + " obs.kind=file",
        "obs",
        "needs path and variable",
    ),
    row(
        "obs-file-without-variable",
        run_on("{C}", "obs.variable=null"),
        BAD_SET + " obs.variable=null",
        "needs path and variable",
        text=FILE_MAP,
    ),
    row(
        "obs-glob-matching-nothing",
        run_on("{C}", "obs.path={D}/l3/*_2019*.nc", cmd="run"),
        "no file matches",
        "*_2019*.nc",
        text=FILE_MAP,
    ),
    row(
        "obs-glob-matching-nothing-on-the-twin",
        "run {C} --out {T}/run",
        "obs.path",
        "no file matches '{T}/l3/*.nc'",
        text=TWIN_FILE_OBS,
    ),
    row(
        "obs-missing-file",
        run_on("{C}", "obs.path={T}/obs_missing.nc", cmd="run"),
        "obs_missing.nc",
        "not found",
        text=FILE_MAP,
    ),
    row(
        "obs-missing-variable",
        run_on("{C}", "obs.variable=sla_filtered", cmd="run"),
        "obs.variable",
        "'sla_filtered'",
        "{D}/obs.nc",
        "['ssh']",
        text=FILE_MAP,
    ),
    row(
        "observe-missing-mask-file",
        "observe clouds --truth {D}/twin.nc --variable ssh --out {T}/o.nc "
        "--mask-from {T}/clouds.nc --mask-variable ssh",
        "clouds.nc",
        "not found",
    ),
    row(
        "obs-kind-unknown",
        run_on(MAP, "obs.kind=argo"),
        BAD_SET + " obs.kind=argo",
        "'argo'",
        "nadir",
    ),
    # --- experiment names and run directories (test_cli: names, a folder of user files)
    row(
        "name-with-dotdot",
        run_on(DYN, "experiment.name=../../elsewhere", cmd="run"),
        "experiment.name",
        "no '..'",
        once=("'../../elsewhere'",),
    ),
    row(
        "name-with-separator-in-file",
        "run {C} --out {T}/run",
        "c.yaml",
        "experiment.name",
        "path separators",
        edit=(DYN, "name: l63_dynamics_quick", "name: runs/l63"),
        once=("'runs/l63'",),
    ),
    row(
        "out-is-a-folder-of-user-files",
        ["run", DYN, "--out", "{T}/mine"],
        "{T}/mine",
        "not a geodl run",
        setup=_user_folder,
    ),
    row(
        "out-is-a-run-of-another-experiment",
        ["run", L63DA, "--out", "{T}/run"],
        "holds experiment 'l63_dynamics_quick'",
        setup=_other_run,
    ),
    row(
        "out-is-a-file",
        ["run", DYN, "--out", "{T}/notes.txt"],
        "notes.txt",
        "is a file, not a directory",
        setup=_existing("notes.txt"),
    ),
    # --- methods, models, losses and sizes (test_mapping_config_checks, test_config)
    row(
        "mapping-unknown-method",
        run_on(MAP, "methods=[oi, krigging]"),
        BAD_SET + " methods=[oi, krigging]",
        "krigging",
        "unet",
    ),
    row(
        "mapping-method-twice",
        run_on(MAP, "methods=[oi, oi]"),
        BAD_SET + " methods=[oi, oi]",
        "twice",
    ),
    row(
        "assimilation-unknown-method",
        run_on(L63DA, "evaluate.methods=[enkf, particle_filter]", cmd="run"),
        BAD_SET + " evaluate.methods=[enkf, particle_filter]",
        "particle_filter",
        "enkf",
    ),
    row(
        "emulation-unknown-method",
        run_on(EMU, "methods=[cnn, gnn]"),
        BAD_SET + " methods=[cnn, gnn]",
        "'gnn'",
        "latent_ode",
    ),
    row(
        "dynamics-unknown-model",
        run_on(DYN, "model.kind=transformer"),
        BAD_SET + " model.kind=transformer",
        "transformer",
        "model.kind",
    ),
    row(
        "mapping-unknown-model-key",
        run_on(MAP, "unet.model={depht: 2}"),
        BAD_SET + " unet.model={depht: 2}",
        "depht",
    ),
    row(
        "mapping-unknown-loss",
        run_on(MAP, "unet.loss={msee: 1.0}"),
        BAD_SET + " unet.loss={msee: 1.0}",
        "section 'unet': unknown loss term 'msee'",
        "mse",
    ),
    row(
        "mapping-unknown-loss-in-file",
        "config validate {C}",
        "c.yaml",
        "section 'unet': unknown loss term 'msee'",
        edit=(MAP, "loss: {mse: 1.0}", "loss: {msee: 1.0}"),
    ),
    row(
        "patch-larger-than-the-twin",
        run_on(MAP, "patch.y=200", cmd="run"),
        BAD_SET + " patch.y=200",
        "patch",
        "200",
    ),
    row(
        "patch-larger-than-the-file-grid",
        "run {C} --out {T}/run",
        "patch",
        "16",
        text=FILE_MAP.replace("methods: [oi]", "methods: [unet]").replace("y: 16", "y: 32"),
    ),
    row(
        "report-day-beyond-test",
        run_on(MAP, "report.days=[10, 400]", cmd="run"),
        BAD_SET + " report.days=[10, 400]",
        "report.days",
    ),
    row(
        "report-day-negative",
        run_on(MAP, "report.days=[-1]"),
        BAD_SET + " report.days=[-1]",
        "report.days",
    ),
    row(
        "gpu-threads-zero",
        run_on(DYN, "experiment.threads=0", cmd="run"),
        BAD_SET + " experiment.threads=0",
        "experiment.threads",
    ),
    row(
        "dynamics-lead-longer-than-trajectory",
        run_on(DYN, "evaluate.lead_steps=5000", cmd="run"),
        BAD_SET + " evaluate.lead_steps=5000",
        "evaluate.lead_steps",
    ),
    row(
        "assimilation-observe-every-zero",
        run_on(L63DA, "observe.every=0"),
        BAD_SET + " observe.every=0",
        "observe.every",
    ),
    row(
        "assimilation-window-longer-than-run",
        run_on(L63DA, "fourdvarnet.window=5000"),
        BAD_SET + " fourdvarnet.window=5000",
        "fourdvarnet.window",
    ),
    # --- geodl stage / --force
    row("stage-unknown-name", ["stage", "trian", DYN, "--out", "{T}/run"], "unknown stage 'trian'"),
    row(
        "stage-before-its-upstream",
        ["stage", "evaluate", DYN, "--out", "{T}/run"],
        "needs the outputs of stage",
    ),
    row(
        "run-dask-workers-zero",
        ["run", DYN, "--out", "{T}/run", "--dask-workers", "0"],
        "--dask-workers",
        ">= 1",
        "'0'",
    ),
    row(
        "run-dask-workers-and-a-scheduler",
        ["run", DYN, "--out", "{T}/run", "--dask-workers", "2", "--scheduler", "tcp://x:8786"],
        "--scheduler",
        "not allowed with argument --dask-workers",
    ),
    row("force-unknown-stage", ["run", DYN, "--out", "{T}/run", "--force", "trian"], "'trian'"),
    # --- geodl info
    row("info-missing-file", "info {T}/none.nc", "none.nc", "not found"),
    row("info-text-file", "info {D}/notes.txt", "notes.txt", "no NetCDF or HDF5 header"),
    row("info-plain-directory", "info {D}/folder", "folder", "is a directory"),
    row("info-unknown-target", "info {D}/dated.nc --target sla", "variable 'sla' not found"),
    row("info-glob-matching-nothing", "info {D}/*.zarr", "no file matches"),
    # --- geodl simulate / observe (tests/tasks/test_simulate_files: option checks)
    row("simulate-unknown-system", "simulate lorenz69 --out {T}/x.nc", "lorenz69", "lorenz63"),
    row(
        "simulate-not-a-number",
        "simulate lorenz63 --n-steps many --out {T}/x.nc",
        "--n-steps",
        "'many'",
    ),
    row("simulate-odd-nx", "simulate qg --nx 15 --out {T}/x.nc", "even integer >= 8"),
    row("simulate-negative-steps", "simulate lorenz63 --n-steps -5 --out {T}/x.nc", "n_steps"),
    row("simulate-unknown-preset", "simulate qg --nx 16 --preset vortex --out {T}/x.nc", "vortex"),
    row(
        "simulate-option-of-another-system",
        "simulate lorenz63 --nx 16 --out {T}/x.nc",
        "do not apply to lorenz63",
    ),
    row("simulate-without-out", "simulate lorenz63", "--out"),
    row(
        "simulate-over-a-user-file",
        "simulate lorenz63 --n-steps 10 --spinup-steps 0 --out {T}/mine.nc",
        "mine.nc",
        setup=_existing("mine.nc"),
    ),
    row(
        "observe-missing-truth",
        "observe nadir --truth {T}/t.nc --variable ssh --out {T}/o.nc",
        "t.nc",
        "not found",
    ),
    row(
        "observe-unknown-variable",
        "observe clouds --truth {D}/twin.nc --variable sla --out {T}/o.nc",
        "'sla'",
    ),
    row(
        "observe-bad-cover",
        "observe clouds --truth {D}/twin.nc --variable ssh --cover 1.5 --out {T}/o.nc",
        "cover",
    ),
    row(
        "observe-over-a-user-file",
        "observe clouds --truth {D}/twin.nc --variable ssh --out {T}/mine.nc",
        "mine.nc",
        setup=_existing("mine.nc"),
    ),
    # --- geodl convert (tests/data/test_data_convert: the converter's checks)
    row(
        "convert-chunks-without-equals",
        "convert {D}/dated.nc {T}/o.zarr --chunks time",
        "--chunks",
        "'time'",
    ),
    row(
        "convert-chunks-not-a-number",
        "convert {D}/dated.nc {T}/o.zarr --chunks time=ten",
        "--chunks",
        "time=ten",
    ),
    row(
        "convert-chunks-unknown-dim",
        "convert {D}/dated.nc {T}/o.zarr --chunks depth=3",
        "--chunks",
        "depth",
    ),
    row(
        "convert-dask-workers-zero",
        "convert {D}/dated.nc {T}/o.zarr --dask-workers 0",
        "--dask-workers",
        ">= 1",
    ),
    row("convert-chunks-zero", "convert {D}/dated.nc {T}/o.zarr --chunks time=0", "time=0"),
    row("convert-missing-source", "convert {T}/none.nc {T}/o.zarr", "none.nc", "not found"),
    row("convert-bad-output-suffix", "convert {D}/dated.nc {T}/o.csv", "o.csv", ".zarr"),
    row(
        "convert-over-a-user-file",
        "convert {D}/dated.nc {T}/mine.nc",
        "mine.nc",
        "--overwrite",
        setup=_existing("mine.nc"),
    ),
    row(
        "convert-bad-zarr-format",
        "convert {D}/dated.nc {T}/o.zarr --zarr-format 4",
        "--zarr-format",
    ),
]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of everything under ``folder`` (folders included)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("mistake", ROWS)
def test_a_user_mistake_ends_with_exit_2_and_one_line(mistake, data_dir, tmp_path, capsys):
    """Exit code 2, one line naming what was wrong, no stage finished, and every file that was
    there before (the user's folders, data files and configs) unchanged: bytes and mtimes."""
    fill = {"{D}": str(data_dir), "{T}": str(tmp_path), "{C}": str(tmp_path / "c.yaml")}

    def filled(text: str) -> str:
        for key, value in fill.items():
            text = text.replace(key, value)
        return text

    if mistake.text is not None:
        (tmp_path / "c.yaml").write_text(filled(mistake.text))
    if mistake.edit is not None:
        source, old, new = mistake.edit
        text = Path(source).read_text()
        assert old in text, (source, old)  # the row still edits what it meant to
        (tmp_path / "c.yaml").write_text(text.replace(old, new, 1))
    if mistake.setup is not None:
        mistake.setup(tmp_path, data_dir)
    before = {"T": _snapshot(tmp_path), "D": _snapshot(data_dir)}
    argv = [filled(a) for a in mistake.argv]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("geodl: error: "), lines
    assert "Traceback" not in out + err
    for fragment in mistake.expected:
        assert filled(fragment) in lines[0], (fragment, lines[0])
    for fragment in mistake.once:
        assert lines[0].count(filled(fragment)) == 1, (fragment, lines[0])
    assert "done in" not in out, out  # refused before any stage finished
    for where, folder in (("T", tmp_path), ("D", data_dir)):
        after = _snapshot(folder)
        touched = sorted(k for k in before[where] if after.get(k) != before[where][k])
        assert not touched, (where, touched)


def test_the_table_is_the_audit():
    ids = [p.id for p in ROWS]
    assert len(ids) == len(set(ids)) >= 60


def test_the_base_configs_of_the_data_rows_are_valid(data_dir, tmp_path, capsys):
    """The data-file rows change one thing each in a config that is otherwise valid."""
    for name, text in (("file", FILE_MAP), ("dated", DATED_MAP)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(text.replace("{D}", str(data_dir)))
        assert main(["stage", "prepare", str(path), "--out", str(tmp_path / name)]) == 0, name
    capsys.readouterr()

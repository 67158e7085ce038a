import json
import subprocess
import sys

import pytest

import geodl.cli as cli
from geodl.cli import main

QUICK = "configs/l63_assimilation_quick.yaml"


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one clear line, no traceback
    return err[0]


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "geodl.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("geodl ")


def test_demo_config_runs_then_skips(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", QUICK, "--out", str(out), "--set", "simulate.n_steps=400"]) == 0
    assert "5 stage(s) ran, 0 skipped" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "assimilation"
    linear, clim = metrics["methods"]["linear"], metrics["methods"]["climatology"]
    # interpolating observations every 8 steps must beat the climatological mean by far
    assert linear["rmse"] < 0.5 * clim["rmse"]
    # trajectories and the learning curves of the quick 4DVarNet
    assert (out / "report" / "index.html").read_text().count("<img") == 2
    assert main(["run", QUICK, "--out", str(out), "--set", "simulate.n_steps=400"]) == 0
    assert "0 stage(s) ran, 5 skipped" in capsys.readouterr().out
    assert main(["info", str(out / "truth.nc")]) == 0
    info = capsys.readouterr().out
    assert "axes: time=time" in info and "truth(trajectory=4, time=401, component=3)" in info


def test_config_show_and_validate(capsys):
    assert main(["config", "show", QUICK, "--set", "observe.every=3"]) == 0
    assert "every: 3" in capsys.readouterr().out
    assert main(["config", "validate", QUICK]) == 0
    assert "ok" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "args", "pattern"),
    [
        (None, [], "not found"),
        ("experiment: [1, 2\n", [], "YAML syntax error at line"),
        (
            "experiment:\n  name: x\n  task: assimilation\nobserve:\n  evry: 3\n",
            [],
            "did you mean 'every'",
        ),
        (
            "experiment:\n  name: x\n  task: assimilation\nobserve:\n  every: many\n",
            [],
            "observe.every",
        ),
        (
            "experiment:\n  name: x\n  task: assimilation\n",
            ["--set", "observe.evry=2"],
            "did you mean 'every'",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, content, args, pattern):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["run", str(path), "--out", str(tmp_path / "r"), *args]) == 2
    line = _err_line(capsys)
    assert line.startswith("geodl: error:") and pattern in line


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "f"
    blocker.write_text("")
    assert main(["run", QUICK, "--out", str(blocker / "x")]) == 2
    assert "not writable" in _err_line(capsys)


def test_info_missing_file_exits_2(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.nc")]) == 2
    assert "file not found" in _err_line(capsys)


def test_internal_error_exits_1_and_debug_shows_traceback(monkeypatch, capsys, tmp_path):
    def broken(args):
        raise RuntimeError("bug")

    monkeypatch.setattr(cli, "_cmd_info", broken)
    assert main(["info", "x.nc"]) == 1
    assert "internal error: RuntimeError: bug" in _err_line(capsys)
    assert main(["info", "x.nc", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("configs/ssh_mapping_quick.yaml", "unet.train"),
        ("configs/l63_dynamics_quick.yaml", "train"),
    ],
)
def test_a_gpu_request_without_a_gpu_fails_before_any_stage(
    tmp_path, capsys, monkeypatch, config, key
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    out = tmp_path / "run"
    args = ["run", config, "--out", str(out), "--set", f"{key}.accelerator=gpu"]
    assert main(args) == 2
    line = _err_line(capsys)
    assert f"{key}.accelerator is 'gpu' but no CUDA GPU" in line
    assert not out.exists()  # refused before the run directory was made


def test_a_folder_of_user_files_is_refused_and_left_untouched(tmp_path, capsys):
    """--out into a folder that is not a geodl run (no config.yaml) must not write into it."""
    user = tmp_path / "mine"
    user.mkdir()
    (user / "obs.nc").write_text("my observations")
    (user / "metrics.json").write_text("{}")
    before = {p.name: p.read_text() for p in user.iterdir()}
    assert main(["run", "configs/l63_assimilation_quick.yaml", "--out", str(user)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files and is not a geodl run" in err[0]
    assert {p.name: p.read_text() for p in user.iterdir()} == before


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "", "a\\\\b"])
def test_an_experiment_name_that_is_a_path_is_refused(tmp_path, capsys, name):
    out = tmp_path / "r"
    args = ["run", "configs/l63_assimilation_quick.yaml", "--out", str(out)]
    assert main([*args, "--set", f"experiment.name={name}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "experiment.name" in err[0], err
    assert not out.exists()


def test_a_run_shows_no_lightning_deprecation_and_warnings_take_one_line(tmp_path, capsys):
    import warnings

    from geodl import cli

    args = ["run", "configs/l63_dynamics_quick.yaml", "--out", str(tmp_path / "r")]
    args += ["--set", "train.max_epochs=1", "--set", "model.lbfgs_iter=0"]
    args += ["--set", "evaluate.lyapunov_steps=100", "--set", "evaluate.long_steps=200"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in seen if "LeafSpec" in str(w.message)]
    cli._one_line_warning(UserWarning("grid too coarse"), UserWarning, "x.py", 3)
    assert (
        capsys.readouterr().err.splitlines()[-1] == "geodl: warning: grid too coarse (UserWarning)"
    )


def test_missing_observation_files_fail_before_the_stages_that_read_them(tmp_path, capsys):
    """obs.path (kind: file) is checked by the stage runner before any stage runs, so a glob
    matching nothing does not wait for the twin's simulation; not at validation (a SLURM
    submission validates a config before its data exists), and not for a stage that does not
    read the obs section (the twin's simulate)."""
    cfg = tmp_path / "c.yaml"
    pattern = str(tmp_path / "l3" / "*.nc")
    cfg.write_text(
        "experiment: {name: twin_obs_files, task: mapping}\n"
        "simulate: {nx: 16, days: 40, spinup_days: 0}\n"
        f"obs: {{kind: file, path: '{pattern}', variable: ssh}}\n"
        "split: {train: [0, 19], val: [24, 29], test: [34, 39]}\n"
        "patch: {time: 4, y: 16, x: 16}\n"
        "methods: [oi]\n"
        "report: {days: [0]}\n"
    )
    assert main(["config", "validate", str(cfg)]) == 0
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    assert f"obs.path: no file matches '{pattern}'" in _err_line(capsys)
    assert not out.exists()  # refused before the run directory was made
    assert main(["stage", "simulate", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["stage", "prepare", str(cfg), "--out", str(out)]) == 2
    assert "obs.path: no file matches" in _err_line(capsys)

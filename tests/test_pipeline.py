import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geodl.errors import RunDirError, UserInputError
from geodl.pipeline import run_experiment
from geodl.tasks import load_config

TOY_SCRIPT = Path(__file__).with_name("toy_task.py")


def _run(config, out, sets=(), **kw):
    cfg, exp = load_config(config, list(sets))
    return run_experiment(cfg, exp, out, echo=lambda _: None, **kw)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
        and ".geodl" not in p.parts
        and p.name not in ("manifest.json",)
        and "logs" not in p.parts
    }


def test_second_run_skips_everything(toy_config, tmp_path):
    out = tmp_path / "run"
    first = _run(toy_config, out)
    assert first.ran == ["a", "b", "c"] and first.skipped == []
    second = _run(toy_config, out)
    assert second.ran == [] and second.skipped == ["a", "b", "c"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["skipped"] * 3
    assert manifest["status"] == "complete"
    for key in ("torch", "xarray", "geodl", "cpu", "git_commit", "gpus"):
        assert key in manifest["environment"]
    assert (out / "config.yaml").exists()
    assert (out / "c" / "out.txt").read_text() == "1999 3!"


@pytest.mark.parametrize(
    ("override", "expected"),
    [("c.suffix=X", ["c"]), ("b.scale=5", ["b", "c"]), ("a.value=2", ["a", "b", "c"])],
)
def test_changing_a_key_reruns_exactly_its_dependents(toy_config, tmp_path, override, expected):
    out = tmp_path / "run"
    _run(toy_config, out)
    result = _run(toy_config, out, [override])
    assert result.ran == expected
    assert result.skipped == [s for s in ["a", "b", "c"] if s not in expected]


def test_force_stage_reruns_downstream(toy_config, tmp_path):
    out = tmp_path / "run"
    _run(toy_config, out)
    assert _run(toy_config, out, force=["b"]).ran == ["b", "c"]
    assert _run(toy_config, out, force_all=True).ran == ["a", "b", "c"]
    with pytest.raises(UserInputError, match="unknown stage 'zz'.*stages: a, b, c"):
        _run(toy_config, out, force=["zz"])


def test_single_stage_needs_upstream(toy_config, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserInputError, match="needs the outputs of stage 'a'"):
        _run(toy_config, out, only="b")
    assert _run(toy_config, out, only="a").ran == ["a"]
    assert _run(toy_config, out, only="b").ran == ["b"]
    assert _run(toy_config, out, only="b").skipped == ["b"]
    # b re-ran by hand: c must see it as stale
    _run(toy_config, out, only="b", force_all=True)
    assert _run(toy_config, out).ran == ["c"]


def test_missing_output_reruns_stage(toy_config, tmp_path):
    out = tmp_path / "run"
    _run(toy_config, out)
    (out / "b.txt").unlink()
    assert _run(toy_config, out).ran == ["b", "c"]


def test_run_dir_of_another_experiment_is_refused(toy_config, tmp_path):
    out = tmp_path / "run"
    _run(toy_config, out)
    other = tmp_path / "other.yaml"
    other.write_text("experiment:\n  name: other\n  task: toy\n")
    with pytest.raises(RunDirError, match="holds experiment 'toy'.*delete that directory"):
        _run(other, out)
    # --force re-runs stages; it does not hand another experiment's directory over
    with pytest.raises(RunDirError, match="holds experiment 'toy'"):
        _run(other, out, force_all=True)
    assert "name: toy" in (out / "config.yaml").read_text()


def test_force_does_not_lift_the_other_experiment_guard_in_the_cli(toy_config, tmp_path, capsys):
    from geodl.cli import main

    out = tmp_path / "run"
    _run(toy_config, out)
    other = tmp_path / "other.yaml"
    other.write_text("experiment:\n  name: other\n  task: toy\n")
    lines = []
    for extra in ([], ["--force"]):
        assert main(["run", str(other), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err  # one line, no traceback
        lines.append(err[0])
    assert lines[0] == lines[1]
    assert "holds experiment 'toy'" in lines[0] and "--out" in lines[0]
    assert "--force" not in lines[0]  # the message no longer offers --force as the way out
    assert main(["stage", "a", str(other), "--out", str(out), "--force"]) == 2
    assert capsys.readouterr().err.strip() == lines[0]


def test_new_geodl_version_reruns_every_stage(toy_config, tmp_path, monkeypatch):
    from geodl import pipeline

    out = tmp_path / "run"
    _run(toy_config, out)
    assert _run(toy_config, out).skipped == ["a", "b", "c"]
    monkeypatch.setattr(pipeline, "_geodl_version", lambda: "999.0")
    result = _run(toy_config, out)
    assert result.ran == ["a", "b", "c"] and result.skipped == []
    assert result.manifest["environment"]["geodl"] == "999.0"
    assert _run(toy_config, out).skipped == ["a", "b", "c"]  # up to date again under 999.0


def test_dotted_sections_key_on_that_entry_only(toy_config, tmp_path):
    from geodl.pipeline import Stage, stage_key

    stage = Stage("x", lambda ctx: None, sections=("b.scale",))

    def key(sets):
        return stage_key(stage, load_config(toy_config, sets)[0], tmp_path, {})

    assert key([]) == key(["b.lines=5"]) == key(["a.value=7"])
    assert key(["b.scale=5"]) != key([])
    bad = Stage("y", lambda ctx: None, sections=("b.nope",))
    cfg, _ = load_config(toy_config, [])
    with pytest.raises(
        RuntimeError, match="stage 'y' declares section 'b.nope', but b has no entry"
    ):
        stage_key(bad, cfg, tmp_path, {})


def test_unwritable_output_dir(toy_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="not writable.*--out"):
        _run(toy_config, blocker / "run")


def test_stage_failure_leaves_no_output(toy_config, tmp_path):
    import toy_task

    out = tmp_path / "run"
    _run(toy_config, out)
    good = (out / "b.txt").read_bytes()

    def boom(ctx):
        ctx.output("b.txt").write_text("half")
        raise RuntimeError("boom")

    stages = tuple(
        s if s.name != "b" else type(s)(**{**s.__dict__, "run": boom}) for s in toy_task.TOY.stages
    )
    cfg, _ = load_config(toy_config, ["b.scale=9"])
    exp = type(toy_task.TOY)(task="toy", schema=toy_task.ToyConfig, stages=stages)
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment(cfg, exp, out, echo=lambda _: None)
    assert (out / "b.txt").read_bytes() == good  # the old output, not the half-written one
    assert not (out / ".geodl" / "stages" / "b.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert list((out / ".geodl" / "tmp").iterdir()) == []


def _start_paused(config, out, marker):
    env = {**os.environ, "GEODL_TOY_PAUSE": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, str(TOY_SCRIPT), "run", str(config), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job (`cmd &`) starts with SIGINT ignored, and Python then installs
        # no Ctrl-C handler: restore the default so the child behaves as under a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"toy run never paused: {proc.communicate()}")
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_mid_stage_then_rerun_gives_same_outputs(toy_config, tmp_path, sig):
    reference = tmp_path / "reference"
    _run(toy_config, reference)
    out = tmp_path / "run"
    proc = _start_paused(toy_config, out, tmp_path / "paused")
    assert (out / "a.txt").exists()  # stage a finished before b paused
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "b.txt").exists()  # no half-written output under the final name
    assert not (out / ".geodl" / "stages" / "b.json").exists()
    result = _run(toy_config, out)
    assert result.ran == ["b", "c"] and result.skipped == ["a"]
    assert _snapshot(out) == _snapshot(reference)


def test_secondary_ranks_run_stages_but_keep_nothing(toy_config, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("RANK", "1")
    result = _run(toy_config, out, only="a")
    assert result.ran == ["a"]
    assert not (out / "a.txt").exists() and not (out / ".geodl" / "stages" / "a.json").exists()
    assert not (out / "manifest.json").exists()
    assert list((out / ".geodl" / "tmp").iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    assert _run(toy_config, out, only="a").ran == ["a"] and (out / "a.txt").exists()

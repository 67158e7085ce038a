import pytest

from geodl.config import Section, apply_overrides, dump_yaml, read_yaml, validate
from geodl.errors import ConfigError
from geodl.tasks import load_config

QUICK = "configs/l63_assimilation_quick.yaml"


class Inner(Section):
    epochs: int = 3
    lr: float = 1e-3


class Outer(Section):
    train: Inner = Inner()
    name: str = "x"
    extra: dict[str, int] = {}


def test_defaults_and_types():
    cfg = validate({"train": {"epochs": 5, "lr": 1}}, Outer)
    assert cfg.train.epochs == 5 and cfg.train.lr == 1.0 and cfg.name == "x"


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'; did you mean 'epochs'"):
        validate({"train": {"epoch": 5}}, Outer)


def test_wrong_type_names_key_and_value():
    with pytest.raises(
        ConfigError, match=r"key 'train.epochs': expected a valid integer, got 'ten'"
    ):
        validate({"train": {"epochs": "ten"}}, Outer)


def test_quoted_number_is_not_coerced():
    with pytest.raises(ConfigError, match="train.epochs"):
        validate({"train": {"epochs": "10"}}, Outer)


def test_overrides_parse_yaml_scalars():
    raw = apply_overrides({}, ["train.epochs=7", "train.lr=1e-2", "name=abc", "extra.k=2"], Outer)
    cfg = validate(raw, Outer)
    assert (cfg.train.epochs, cfg.train.lr, cfg.name, cfg.extra) == (7, 0.01, "abc", {"k": 2})


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("train.epoch=3", r"unknown key 'epoch' in train; did you mean 'epochs'"),
        ("trian.epochs=3", r"unknown key 'trian' in top level; did you mean 'train'"),
        ("name.sub=1", r"'name' is a value, not a section"),
        ("train.epochs", r"expected KEY.PATH=VALUE"),
    ],
)
def test_bad_overrides(item, pattern):
    with pytest.raises(ConfigError, match=pattern):
        apply_overrides({}, [item], Outer)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_yaml_syntax_error_has_line_number(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"YAML syntax error at line \d+, column \d+"):
        read_yaml(path)


def test_quick_config_loads_and_round_trips(tmp_path):
    cfg, exp = load_config(QUICK, ["observe.every=4"])
    assert exp.task == "assimilation" and cfg.observe.every == 4
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    again, _ = load_config(path)
    assert again == cfg


def test_unknown_task(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("experiment:\n  name: x\n  task: nope\n")
    with pytest.raises(ConfigError, match=r"'experiment.task' is 'nope'; expected one of"):
        load_config(path)


def test_unknown_method_lists_choices():
    with pytest.raises(ConfigError, match=r"evaluate.methods.0': expected 'linear', 'climatology'"):
        load_config(QUICK, ["evaluate.methods=[kalman]"])


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nn: 10\nname: 1e3x\n")
    raw = read_yaml(path)
    assert raw == {"lr": 0.001, "n": 10, "name": "1e3x"}


def test_every_shipped_config_validates():
    from pathlib import Path

    configs = sorted(Path("configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        cfg, experiment = load_config(path)
        assert experiment.resolve(cfg).stages, path


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        ("configs/l63_dynamics_quick.yaml", "model.rollout=1001", "model.rollout=1001 steps needs"),
        ("configs/l63_dynamics_quick.yaml", "evaluate.lead_steps=1001", "evaluate.lead_steps=1001"),
        (
            "configs/l63_dynamics_quick.yaml",
            "model.lbfgs_iter=0 model.estimate_states=true",
            "model.estimate_states needs model.lbfgs_iter > 0",
        ),
        ("configs/qg_emulation_quick.yaml", "cnn.rollout=1000", "cnn.rollout=1000 steps needs"),
        ("configs/qg_emulation_quick.yaml", "evaluate.lead_days=10000", "evaluate.lead_days"),
    ],
)
def test_cross_section_mistakes_fail_at_config_validate(capsys, config, override, message):
    """Before, these passed ``geodl config validate`` and failed once the stages ran. The
    error is blamed on the ``--set`` that caused it, not on the (valid) shipped file."""
    from geodl.cli import main

    sets = [x for o in override.split() for x in ("--set", o)]
    assert main(["config", "validate", config, *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and config not in err[0], err
    assert err[0].startswith(f"geodl: error: --set {override.split()[-1]}: "), err


def test_yaml_reads_dates_as_text_and_only_true_false_as_booleans(tmp_path):
    """Unquoted dates in a split are the date strings splits expect (not datetime.date), and
    YAML 1.1's 'no' / 'on' are not booleans: a bool field given one fails with one line."""
    from geodl.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("split:\n  train: [2010-01-01, 2011-07-03]\nflags: [no, on, true, False]\n")
    raw = read_yaml(path)
    assert raw["split"]["train"] == ["2010-01-01", "2011-07-03"]
    assert raw["flags"] == ["no", "on", True, False]


def test_a_bad_set_value_is_blamed_on_the_set_not_on_the_file(capsys):
    from geodl.cli import main

    argv = ["config", "validate", "configs/l63_assimilation_quick.yaml"]
    assert main([*argv, "--set", "observe.every=-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("geodl: error: --set observe.every=-3: key 'observe.every'"), err

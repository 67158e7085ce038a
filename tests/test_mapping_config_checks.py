"""Config mistakes of the mapping task caught by ``geodl config validate`` (exit 2, one line),
before any stage runs, and suspicious but legal settings warned about."""

from __future__ import annotations

import pytest

from geodl.cli import main

QUICK = "configs/ssh_mapping_quick.yaml"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            "split.train=[600, 700]",
            "split.train [600.0, 700.0] and split.val [569.0, 628.0] overlap",
        ),
        ("split.test=[729, 658]", "split.test [729.0, 658.0] ends before it starts"),
        (
            "split={train: ['2010-01-01', '2010-06-30'], val: ['2010-06-01', '2010-07-30'], "
            "test: ['2010-09-01', '2010-12-01']}",
            "overlap",
        ),
        ("report.days=[10, 400]", "report.days [400] lie beyond the test period"),
        ("report.days=[-1]", "indices into the test period are >= 0"),
        ("unet.model={depht: 2}", "model keys ['depht'] invalid for unet"),
        ("unet.loss={nll: 1}", "loss term 'nll' needs a predicted variance"),
        ("obs.kind=file", "kind 'file' needs path and variable"),
        ("patch.y=200", "larger than the simulated grid"),
    ],
)
def test_config_mistakes_fail_validation_in_one_line(setting, expected, capsys):
    assert main(["config", "validate", QUICK, "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


def test_training_after_the_test_period_is_warned_not_refused(capsys):
    setting = "split={train: [200, 300], val: [100, 150], test: [0, 60]}"
    assert main(["config", "validate", QUICK, "--set", setting]) == 0
    err = capsys.readouterr().err
    assert "geodl: warning: split.train [200.0, 300.0] lies after split.test" in err

"""Progress: a line per epoch where no progress bar shows (batch logs, progress_bar: false)."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import train_script as t  # noqa: E402

from geodl.training import TaskModule, TrainSection, fit  # noqa: E402
from geodl.training.trainer import _progress_bar  # noqa: E402


def test_one_line_per_epoch_without_a_terminal(tmp_path, capsys):
    logging.getLogger("lightning").setLevel(logging.ERROR)
    spec = TrainSection(max_epochs=3, batch_size=16, lr=1e-2, progress_bar=True)
    assert not _progress_bar(spec)  # pytest's stderr is not a terminal: no bar, lines instead
    module = TaskModule(t.make_model(), t.loss_fn, spec, metadata={"config": {"demo": 1}})
    fit(
        module,
        t.make_data(32),
        t.make_data(16, seed=5),
        spec,
        ckpt_dir=tmp_path / "ckpt",
        log_dir=tmp_path / "logs",
        key="k",
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "epoch" in ln]
    assert len(lines) == 3
    for n, line in enumerate(lines, 1):
        assert re.fullmatch(
            rf"\[geodl\]   epoch {n}/3: train/loss \S+, val/loss \S+ \(\d+\.\d s\)", line
        ), line

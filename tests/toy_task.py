"""A tiny three-stage task for runner tests: a -> b -> c, with a way to pause inside stage b.

Run as a script it is the ``geodl`` command with this task registered, so tests can kill it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from pydantic import Field

from geodl.config import Section
from geodl.pipeline import Experiment, Stage, StageContext
from geodl.tasks.registry import ExperimentSection, register


class ASection(Section):
    value: int = 1


class BSection(Section):
    scale: int = Field(2, gt=0)
    lines: int = 2000


class CSection(Section):
    suffix: str = "!"


class ToyConfig(Section):
    experiment: ExperimentSection
    a: ASection = ASection()
    b: BSection = BSection()
    c: CSection = CSection()


def _a(ctx: StageContext) -> None:
    ctx.output("a.txt").write_text(str(ctx.cfg.a.value))


def _b(ctx: StageContext) -> None:
    value = int(ctx.input("a.txt").read_text()) * ctx.cfg.b.scale
    with ctx.output("b.txt").open("w") as fh:
        for i in range(ctx.cfg.b.lines):
            fh.write(f"{i} {value}\n")
            if i == ctx.cfg.b.lines // 2 and os.environ.get("GEODL_TOY_PAUSE"):
                fh.flush()
                Path(os.environ["GEODL_TOY_PAUSE"]).write_text("paused")
                time.sleep(60)  # the test kills the process here


def _c(ctx: StageContext) -> None:
    last = ctx.input("b.txt").read_text().splitlines()[-1]
    ctx.output("c/out.txt").write_text(last + ctx.cfg.c.suffix)


TOY = register(
    Experiment(
        task="toy",
        schema=ToyConfig,
        stages=(
            Stage("a", _a, sections=("a",), outputs=("a.txt",)),
            Stage("b", _b, sections=("b",), needs=("a",), outputs=("b.txt",)),
            Stage("c", _c, sections=("c",), needs=("b",), outputs=("c",)),
        ),
    )
)

if __name__ == "__main__":
    from geodl.cli import main

    sys.exit(main())

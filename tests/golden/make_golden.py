"""Regenerate tests/golden/models.pt: outputs of every model case (first configuration of each
model, and the second) on seeded inputs, in eval mode, float32 CPU.

Run from the repository root:  .venv/bin/python tests/golden/make_golden.py
Only regenerate after an intended change of a model's numerics, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import CASES, outputs  # noqa: E402

from geodl.models import build_model  # noqa: E402


def golden_outputs(case_id: str, name: str, kwargs: dict, make_inputs) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(name, **kwargs).eval()
    args = make_inputs(torch.Generator().manual_seed(1))
    with torch.no_grad():
        return {f"{case_id}/{k}": v.clone() for k, v in outputs(model(*args)).items()}


def main() -> None:
    golden: dict[str, torch.Tensor] = {}
    for case in CASES:
        golden.update(golden_outputs(*case))
    torch.save(golden, HERE / "models.pt")
    print(f"wrote {len(golden)} tensors to {HERE / 'models.pt'}")


if __name__ == "__main__":
    main()

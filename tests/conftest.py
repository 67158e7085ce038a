import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))


@pytest.fixture
def toy_config(tmp_path):
    """Write a toy experiment config and return its path."""
    import toy_task  # noqa: F401  (registers the task)

    path = tmp_path / "toy.yaml"
    path.write_text("experiment:\n  name: toy\n  task: toy\nb:\n  scale: 3\n")
    return path

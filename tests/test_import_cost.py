"""Starting the CLI is cheap: building the parser loads no torch, Lightning or xarray.

Deterministic (what is in ``sys.modules``), not timed. Each check runs in a fresh interpreter, since
this test process has long imported everything.
"""

import subprocess
import sys

import pytest

HEAVY = ("torch", "lightning", "xarray")

_CHECK = """
import sys
{code}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("HEAVY:" + ",".join(heavy))
"""


def _heavy_modules_after(code: str) -> str:
    """Comma-separated heavy modules loaded after running ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _CHECK.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.rsplit("HEAVY:", 1)[1].strip()  # after what the command printed


@pytest.mark.parametrize(
    "code",
    [
        "import geodl",
        "import geodl.cli; geodl.cli._parser()",
        "import geodl.cli\ntry:\n    geodl.cli.main(['--version'])\nexcept SystemExit:\n    pass",
        "import geodl.cli\ntry:\n    geodl.cli.main(['simulate', '--help'])\nexcept SystemExit:\n"
        "    pass",
    ],
    ids=["import_geodl", "build_parser", "version", "simulate_help"],
)
def test_cli_start_imports_no_heavy_modules(code):
    assert _heavy_modules_after(code) == ""


def test_tasks_load_on_first_use():
    code = (
        "from geodl.tasks import TASKS, get_task\n"
        "assert not TASKS, sorted(TASKS)\n"
        "assert get_task('assimilation').task == 'assimilation'"
    )
    assert "torch" in _heavy_modules_after(code).split(",")


def test_lazy_public_api():
    import geodl
    from geodl.pipeline import run_experiment
    from geodl.tasks import load_config

    assert geodl.load_config is load_config and geodl.run_experiment is run_experiment
    assert set(geodl.__all__) <= set(dir(geodl))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        geodl.nope  # noqa: B018

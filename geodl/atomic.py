"""Atomic file output: write to a temporary sibling, rename into place on success.

A killed process leaves at worst a ``.tmp-*`` sibling, never a half-written file under the final name
that a later run would trust (DESIGN.md, run contract).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "remove_path", "replace_path"]


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_path(src: Path, dst: Path) -> None:
    """Move ``src`` (file or directory, e.g. a Zarr store) onto ``dst``, replacing it.

    Files are replaced with one atomic ``os.replace``; a directory target is first moved aside, so
    ``dst`` is never a mixture of old and new content.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir() and not dst.is_symlink():
        trash = dst.with_name(f".trash-{uuid.uuid4().hex[:8]}-{dst.name}")
        os.replace(dst, trash)
        os.replace(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dst``; on normal exit it replaces ``dst``, else it is removed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{dst.name}")
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"nothing was written to the temporary path for {dst}")
    replace_path(tmp, dst)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)

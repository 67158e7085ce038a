"""Where Dask computations run: in process (default), a LocalCluster, or an existing scheduler.

Preprocessing functions (statistics, conversion) take ``dask_workers`` and ``scheduler`` arguments
and run their graph inside :func:`dask_client`; nothing else in geodl creates a cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from geodl.errors import ConfigError

__all__ = ["dask_client"]


@contextlib.contextmanager
def dask_client(
    dask_workers: int | None = None, scheduler: str | None = None, *, processes: bool = True
) -> Iterator[Any]:
    """Run the enclosed Dask computations in process, on a LocalCluster or on ``scheduler``.

    Parameters
    ----------
    dask_workers : int, optional
        Start a ``LocalCluster`` of this many single-threaded workers for the block.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``, e.g. from dask-jobqueue on SLURM).
    processes : bool
        Local workers as processes (default) or threads.

    Yields
    ------
    distributed.Client or None
        ``None`` in process (Dask's default threaded scheduler).

    Examples
    --------
    >>> with dask_client() as client:
    ...     client is None
    True
    """
    if dask_workers is not None and scheduler is not None:
        raise ConfigError("give either dask_workers or a scheduler address, not both")
    if dask_workers is None and scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler}: {exc}; check the address"
            ) from None
        with client:
            yield client
        return
    if not isinstance(dask_workers, int) or dask_workers < 1:
        raise ConfigError(f"dask_workers={dask_workers!r}; expected a positive integer")
    with (
        LocalCluster(
            n_workers=dask_workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client

"""A packet-count progress bar on stderr (rich), shared by the long CLI commands."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

stderr = Console(stderr=True)


@contextmanager
def packet_progress(description: str, total: int | None = None, enabled: bool = True):
    """Yield ``advance(n)``; shows packets done, rate and elapsed time."""
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, disable=not enabled, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int) -> None:
            progress.advance(task, n)
            t = progress.tasks[task]
            if t.elapsed:
                progress.update(task, rate=f"{t.completed / t.elapsed:,.0f} pkt/s")

        yield advance

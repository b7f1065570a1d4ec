"""Progress of the long steps of a compile (import, saturation, extraction, codegen): rich progress
bars on stderr while ``shown`` is active (the CLI turns it on), nothing otherwise.

The compiler marks its steps with ``stage``, which costs nothing when no progress is shown; ``shown``
shows them only on a terminal and never under CI (``$CI`` set), so pipes and logs stay clean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_progress: Any = None
"""The rich Progress being shown, if any."""


def wanted() -> bool:
    """Whether progress should show: stderr is a terminal and this is not CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def shown(enabled: bool | None = None) -> Iterator[None]:
    """Show the steps that run inside this block (default: when ``wanted()``)."""
    global _progress
    if not (wanted() if enabled is None else enabled) or _progress is not None:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description:<12}"), BarColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        _progress = progress
        try:
            yield
        finally:
            _progress = None


def active() -> Any:
    """The rich Progress being shown (inside ``shown``), or None: a long step may add bars of its own
    to it (one live display at a time)."""
    return _progress


@contextmanager
def stage(name: str, total: int | None = None) -> Iterator[Callable[[], None]]:
    """A step called ``name`` of ``total`` parts (None: unknown); the block calls what it is given
    once per part done."""
    progress = _progress
    if progress is None:
        yield lambda: None
        return
    task = progress.add_task(name, total=total)
    try:
        yield lambda: progress.advance(task)
    finally:
        progress.update(task, total=total or 1, completed=total or 1)

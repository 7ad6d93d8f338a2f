"""How library stages report progress without depending on a terminal library."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol

Advance = Callable[[int], None]


class ProgressReporter(Protocol):
    def stage(self, name: str, total: int | None) -> contextlib.AbstractContextManager[Advance]:
        """A context for one stage; the yielded callable advances it by n units."""


class SilentProgress:
    """Reports nothing; records each stage's wall time (used by benchmarks and tests)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None) -> Iterator[Advance]:
        start = time.perf_counter()
        self.counts[name] = 0

        def advance(n: int = 1) -> None:
            self.counts[name] += n

        try:
            yield advance
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

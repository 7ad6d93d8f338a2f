"""What every command shares, below both ``animate_cli.cli`` and the command modules: the stderr
console, Rich progress bars, logging setup and the mapping of failures to exit codes."""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ..errors import AnimateFaceError, InterruptedRun, UsageError

console = Console(stderr=True)


class RichProgress:
    """Progress bars on stderr, one per stage; a stage with nothing to do (total 0) draws none."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.enabled = enabled
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, total: int | None) -> Iterator[Callable[[int], None]]:
        start = time.perf_counter()
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description:<10}"), BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        # A bar for a stage that does not run (fine-tuning 0 steps) only reads as "0/? 0:00:00".
        shown = self.enabled and total != 0
        with Progress(*columns, console=self.console or console, disable=not shown, transient=False) as progress:
            task = progress.add_task(name, total=total)
            yield lambda n=1: progress.advance(task, n)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def setup_logging(verbose: bool, quiet: bool) -> None:
    """Default: warnings the user can act on; -q: errors only; -v: everything the library says."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    for noisy in ("huggingface_hub", "urllib3", "httpx", "filelock", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.DEBUG)
    # Connection-level chatter (every TCP attempt) says nothing a user can act on, even with -v.
    logging.getLogger("httpcore").setLevel(logging.WARNING)


@contextlib.contextmanager
def errors_to_exit_codes(verbose: bool) -> Iterator[None]:
    """The one place where failures become a one-line message and an exit code."""
    try:
        yield
    except AnimateFaceError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        console.print(f"[bold red]error:[/] {InterruptedRun('interrupted; no partial output was left')}")
        raise typer.Exit(InterruptedRun.exit_code) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as error:  # noqa: BLE001 - the outermost boundary: report bugs as exit 1
        if verbose:
            traceback.print_exc()
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error} "
                      "(rerun with --verbose for the traceback; please report it)", highlight=False)
        raise typer.Exit(1) from None


def check_person_source(photos: list[Path] | None, person: Path | None) -> None:
    """The person comes from photos or from a saved --person folder: exactly one of them."""
    if not photos and person is None:
        raise UsageError("give photos of the person (or --person DIR)")
    if photos and person is not None:
        raise UsageError("give either photos or --person, not both")


def check_photos(photos: list[Path] | None, person: Path | None, landmarks: str, device: str, face_index: int):
    """The landmark backend, and the person's photos loaded with their faces found (None with --person):
    checked before the model loads and long before fine-tuning, without importing torch on a
    machine with no GPU. No progress bar: a bad photo fails with its one line alone."""
    from ..devices import resolve_device_name
    from ..landmarks import create_backend
    from ..photos import find_faces, resolve_photo_paths

    backend = create_backend(landmarks, device=resolve_device_name(device))
    faces = find_faces(resolve_photo_paths(photos), backend, face_index) if person is None else None
    return backend, faces

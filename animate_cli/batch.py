"""Many people, one driver: the model and the driver's landmarks are prepared once."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .config import FinetuneConfig, RenderConfig
from .errors import AnimateFaceError, InputError
from .io.images import IMAGE_EXTENSIONS
from .jobs import Engine
from .progress import ProgressReporter, SilentProgress
from .render.pipeline import Driver

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPerson:
    name: str
    photos: tuple[Path, ...]


@dataclass(frozen=True)
class BatchResult:
    name: str
    status: str          # "done", "skipped" (output already there) or "failed"
    seconds: float
    output: Path
    reason: str = ""


def discover_people(folder: str | Path) -> list[BatchPerson]:
    """Every image directly in the folder is one person; every subfolder is one person."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if not folder.is_dir():
        raise InputError("is not a folder (batch takes a folder of people)", folder)
    people = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            people.append(BatchPerson(entry.name, (entry,)))
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            people.append(BatchPerson(entry.stem, (entry,)))
    if not people:
        raise InputError("holds no photos or person folders", folder)
    names = [p.name for p in people]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        # a.jpg and a/ would both write a.mp4: keep them apart by their full names.
        people = [BatchPerson(p.photos[0].name if p.name in duplicates else p.name, p.photos) for p in people]
    return people


def output_path(out_dir: str | Path, person: BatchPerson) -> Path:
    """Where a person's video goes: ``OUT_DIR/PERSON.mp4`` (its preview sheet: the same name, .png)."""
    return Path(out_dir) / f"{person.name}.mp4"


def skipped(person: BatchPerson, output: Path, config: RenderConfig) -> BatchResult | None:
    """The result of a person whose output is already there (resume), or None when it is to be made."""
    if output.exists() and not config.overwrite:
        return BatchResult(person.name, "skipped", 0.0, output, "output exists")
    return None


def animate_person(engine: Engine, person: BatchPerson, driver: Driver, output: Path, finetune: FinetuneConfig,
                   config: RenderConfig, face_index: int = 0, progress: ProgressReporter | None = None,
                   preview: bool = False) -> BatchResult:
    """One person of a batch: photos -> person -> ``output`` (written atomically), as a "done" or a
    "failed" result whose reason is the error's one line. Shared by the local and the Ray batch."""
    start = time.perf_counter()
    try:
        subject = engine.make_person(person.photos, finetune, face_index, progress)
        engine.animate(subject, driver, output, config, progress,
                       preview=output.with_suffix(".png") if preview else None)
    except AnimateFaceError as error:
        log.warning("%s: failed: %s", person.name, error)
        return BatchResult(person.name, "failed", time.perf_counter() - start, output, str(error))
    return BatchResult(person.name, "done", time.perf_counter() - start, output)


def run_batch(engine: Engine, people: list[BatchPerson], driver: Driver, out_dir: str | Path,
              finetune: FinetuneConfig, config: RenderConfig, face_index: int = 0,
              progress: ProgressReporter | None = None, preview: bool = False) -> list[BatchResult]:
    """Animate each person in turn; one person's failure does not stop the others. ``preview``:
    a contact sheet PERSON.png beside each PERSON.mp4."""
    progress = progress or SilentProgress()
    results = []
    for person in people:
        output = output_path(out_dir, person)
        results.append(skipped(person, output, config)
                       or animate_person(engine, person, driver, output, finetune, config, face_index, progress,
                                         preview))
    return results

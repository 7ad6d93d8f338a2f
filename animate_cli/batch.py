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


def run_batch(engine: Engine, people: list[BatchPerson], driver: Driver, out_dir: str | Path,
              finetune: FinetuneConfig, config: RenderConfig, face_index: int = 0,
              progress: ProgressReporter | None = None, preview: bool = False) -> list[BatchResult]:
    """Animate each person in turn; one person's failure does not stop the others. ``preview``:
    a contact sheet PERSON.png beside each PERSON.mp4."""
    progress = progress or SilentProgress()
    out_dir = Path(out_dir)
    results = []
    for person in people:
        output = out_dir / f"{person.name}.mp4"
        start = time.perf_counter()
        if output.exists() and not config.overwrite:
            results.append(BatchResult(person.name, "skipped", 0.0, output, "output exists"))
            continue
        try:
            subject = engine.make_person(person.photos, finetune, face_index, progress)
            engine.animate(subject, driver, output, config, progress,
                           preview=output.with_suffix(".png") if preview else None)
        except AnimateFaceError as error:
            log.warning("%s: failed: %s", person.name, error)
            results.append(BatchResult(person.name, "failed", time.perf_counter() - start, output, str(error)))
            continue
        results.append(BatchResult(person.name, "done", time.perf_counter() - start, output))
    return results

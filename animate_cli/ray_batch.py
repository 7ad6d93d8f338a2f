"""``batch --ray``: the same batch spread over the workers of a Ray cluster.

The submitting machine does what it does for a local batch up to the people: it checks and tracks
the driver once and decides who is skipped (resume). The driver's landmarks, the driver file (for
its audio and frames), the weights (unless they are the bundled ones every install has) and each
person's photos travel through Ray's object store, so the workers need no shared input folder.
Each worker is an actor that builds the engine once and animates people one after another through
``batch.animate_person``, the function the local batch uses. Outputs are written atomically by the
workers into ``--out-dir`` (storage every worker sees), or with ``collect`` sent back as bytes and
written atomically here.

Ray is an optional extra and is imported only here, only when a Ray batch runs.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .batch import BatchPerson, BatchResult, animate_person, output_path, skipped
from .config import FinetuneConfig, RenderConfig
from .errors import AnimateFaceError, OutputError, UsageError
from .io.atomic import atomic_output
from .io.images import list_images
from .jobs import MOUTHS, Engine
from .progress import Advance, ProgressReporter, SilentProgress
from .render.pipeline import Driver

log = logging.getLogger(__name__)

# No brackets (the extra's "[ray]"): the terminal would read them as markup and drop them.
INSTALL_HINT = 'pip install "ray>=2.40" (the "ray" extra of animate-face)'
# Named actors show up as such in Ray's dashboard and ``ray list actors``.
WORKER_NAME = "animate-face-worker"
# A worker's scratch folder in its temporary folder: PREFIX + the worker's process id + a random tail.
SCRATCH_PREFIX = "animate-face-ray-"
# How long a finished or interrupted run waits for its workers to clean up or die.
SHUTDOWN_WAIT_S = 10.0


def import_ray() -> Any:
    """The ``ray`` module; UsageError (exit 2) with the install command when the extra is missing."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, an optional extra: {INSTALL_HINT}") from None
    return ray


def check_ray_options(use_ray: bool, address: str | None = None, collect: bool = False,
                      workers: int | None = None) -> bool:
    """Whether the batch runs on Ray (``--ray``, or an address); fails at once, before any slow work,
    on Ray options that cannot work: Ray not installed, ``--collect``/``--ray-workers`` without Ray."""
    use_ray = use_ray or address is not None
    if not use_ray:
        if collect:
            raise UsageError("--collect applies to --ray (a local batch writes into --out-dir itself)")
        if workers is not None:
            raise UsageError("--ray-workers applies to --ray")
        return False
    import_ray()
    return True


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to build the engine the submitting machine built (``jobs.build_engine``'s
    arguments, with every "auto" already resolved here so all workers agree)."""

    renderer: str
    landmarks: str
    device: str
    backend: str
    compile: bool
    learned_parts: bool
    mouth: str

    @classmethod
    def of(cls, engine: Engine) -> EngineSpec:
        mouth = next(name for name, parts in MOUTHS.items() if parts == engine.part_names)
        return cls(renderer=engine.renderer, landmarks=engine.backend.name, device=str(engine.device),
                   backend=engine.render_backend, compile=engine.compile, learned_parts=engine.parts is not None,
                   mouth=mouth)

    def build(self, weights: str | None) -> Engine:
        from .jobs import build_engine

        return build_engine(weights, self.landmarks, self.device, self.renderer, self.backend, self.compile,
                            learned_parts=self.learned_parts, mouth=self.mouth)


def weights_to_ship(engine: Engine) -> Path | None:
    """The weights folder the workers need a copy of: None when the engine uses no weights or the
    bundled ones (every install has those)."""
    from .hub import bundled_weights_dir, resolve_weights

    if engine.model is None and engine.parts is None:
        return None
    # The warp renderer keeps weights_dir only for weights the user named; its parts came from the default.
    folder = engine.weights_dir or resolve_weights(None)
    return None if folder.resolve() == bundled_weights_dir().resolve() else folder


def read_files(paths: list[Path]) -> dict[str, bytes]:
    """File name -> bytes; a file this machine cannot read is left out, so the worker reports it
    missing in the person's own line rather than this run stopping."""
    files = {}
    for path in paths:
        try:
            files[path.name] = path.read_bytes()
        except OSError as error:
            log.warning("%s: cannot read (%s); the worker will report it", path, error.strerror)
    return files


@dataclass(frozen=True)
class ShippedEntry:
    """One photo or person folder of a person, as bytes (a folder: its images, as the worker would list them)."""

    name: str
    folder: bool
    files: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> ShippedEntry:
        if path.is_dir():
            return cls(path.name, True, read_files(list_images(path)))
        return cls(path.name, False, read_files([path]))


@dataclass(frozen=True)
class ShippedPerson:
    """A person sent to a worker: the photos' bytes, where the result goes and what it is called here."""

    person: BatchPerson       # as discovered here (its paths name the files in messages)
    entries: tuple[ShippedEntry, ...]
    output: Path              # the output path as this machine names it (the results table's)
    target: Path              # where a worker writes it (absolute: a worker's working folder differs)

    @classmethod
    def read(cls, person: BatchPerson, output: Path) -> ShippedPerson:
        return cls(person, tuple(ShippedEntry.read(Path(p)) for p in person.photos), output, output.absolute())

    def unpack(self, scratch: Path) -> tuple[BatchPerson, dict[Path, Path]]:
        """Write the photos under ``scratch``: the person as the worker sees it, and each local folder
        -> the folder it stands for here (to name the original files in a failure's reason)."""
        photos, renames = [], {}
        for index, (entry, original) in enumerate(zip(self.entries, self.person.photos)):
            parent = scratch / str(index)
            local = parent / entry.name
            (local if entry.folder else parent).mkdir(parents=True)
            for name, data in entry.files.items():
                ((local / name) if entry.folder else local).write_bytes(data)
            photos.append(local)
            renames[parent] = Path(original).parent
        return BatchPerson(self.person.name, tuple(photos)), renames


def relabel(text: str, renames: dict[Path, Path]) -> str:
    """``text`` with each worker-local folder replaced by the folder it stands for on the submitting
    machine, so a failure reads exactly as in a local batch."""
    for local, original in renames.items():
        # A path inside the folder; then the folder itself (not followed by more of a name: .../1 in .../10).
        text = text.replace(f"{local}{os.sep}", "" if str(original) == "." else f"{original}{os.sep}")
        text = re.sub(re.escape(str(local)) + r"(?![\w.-])", lambda _: str(original), text)
    return text


def remove_stale_scratch(folder: Path) -> None:
    """Delete the scratch folders in ``folder`` of workers that are gone: a killed worker (Ctrl-C, a
    worker killed or out of memory) cannot clean up after itself, so the next one on the node does."""
    for scratch in folder.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = scratch.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(scratch, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class BatchWorker:
    """One Ray worker (an actor): builds the engine once, then animates people one after another.

    Its scratch folder (the unpacked weights, driver and photos) lives in the worker's temporary folder.
    """

    def __init__(self, spec: EngineSpec, weights: dict[str, bytes] | None, driver: Driver,
                 driver_file: bytes | None, finetune: FinetuneConfig, config: RenderConfig, face_index: int,
                 preview: bool, collect: bool):
        import cv2
        import torch

        # One worker per CPU: more threads per worker would only make the workers fight over cores.
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        remove_stale_scratch(Path(tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        self.spec, self.finetune, self.config = spec, finetune, config
        self.face_index, self.preview, self.collect = face_index, preview, collect
        self.renames: dict[Path, Path] = {}
        self.weights = None
        if weights is not None:
            self.weights = self.root / "weights"
            self.weights.mkdir()
            for name, data in weights.items():
                (self.weights / name).write_bytes(data)
        if driver_file is not None:
            # The driver's audio and frames (side by side, previews) are read from this copy.
            local = self.root / "driver" / driver.path.name
            local.parent.mkdir()
            local.write_bytes(driver_file)
            self.renames[local.parent] = driver.path.parent
            driver = replace(driver, path=local)
        self.driver = driver
        self.engine: Engine | None = None

    def setup(self) -> str:
        """Build the engine (the model is loaded once per worker); its summary."""
        if self.engine is None:
            from .hub import bundled_weights_dir

            weights = self.weights or (bundled_weights_dir() if self.spec.renderer == "neural" or
                                       self.spec.learned_parts else None)
            self.engine = self.spec.build(None if weights is None else str(weights))
        return self.engine.summary()

    def render(self, shipped: ShippedPerson) -> tuple[BatchResult, bytes | None, bytes | None]:
        """Animate one person: its result (named as on the submitting machine) and, when collecting,
        the video's and the preview's bytes."""
        self.setup()
        scratch = Path(tempfile.mkdtemp(dir=self.root))
        try:
            person, renames = shipped.unpack(scratch)
            renames.update(self.renames)
            output = shipped.target
            if self.collect:
                output = scratch / "out" / shipped.output.name
                output.parent.mkdir()
            renames[output.parent] = shipped.output.parent
            result = animate_person(self.engine, person, self.driver, output, self.finetune, self.config,
                                    self.face_index, preview=self.preview)
            video = sheet = None
            if self.collect and result.status == "done":
                video = output.read_bytes()
                sheet = output.with_suffix(".png").read_bytes() if self.preview else None
            return replace(result, output=shipped.output, reason=relabel(result.reason, renames)), video, sheet
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class PeopleLabel(str):
    """The people bar's label, "people" with the live done/skipped/failed counts.

    A progress stage has only a name (``ProgressReporter``); a terminal draws it by formatting it on
    every refresh, so this label reads the counts then. As a key it is just "people".
    """

    counts: dict[str, int]

    def __new__(cls, counts: dict[str, int]) -> PeopleLabel:
        label = super().__new__(cls, "people")
        label.counts = counts
        return label

    def __str__(self) -> str:
        return "people " + " · ".join(f"{self.counts[s]} {s}" for s in ("done", "skipped", "failed"))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def remove_partials(output: Path, preview: bool) -> None:
    """Delete the hidden temporary files (``io.atomic.temp_path_for``) that a worker which died while
    writing ``output`` (and its preview sheet) left beside it."""
    for target in (output, output.with_suffix(".png")) if preview else (output,):
        for tag in ("partial", "video"):
            for leftover in glob.glob(str(target.parent / f".{glob.escape(target.stem)}.{tag}-*{target.suffix}")):
                Path(leftover).unlink(missing_ok=True)


def write_collected(result: BatchResult, video: bytes, sheet: bytes | None, overwrite: bool) -> BatchResult:
    """Write a collected person's video (and preview) atomically here; a write that fails fails the person."""
    try:
        if sheet is not None:
            with atomic_output(result.output.with_suffix(".png"), overwrite) as temp:
                temp.write_bytes(sheet)
        # The video last: its presence is what marks the person done for a resumed run.
        with atomic_output(result.output, overwrite) as temp:
            temp.write_bytes(video)
    except OutputError as error:
        log.warning("%s: failed: %s", result.name, error)
        return replace(result, status="failed", reason=str(error))
    return result


@dataclass
class _Job:
    kind: str                          # "setup" (a worker loading its model) or "render" (one person)
    actor: Any
    shipped: ShippedPerson | None = None
    attempt: int = 1


@dataclass
class _RayRun:
    """One Ray batch: a pool of workers fed one person at a time."""

    ray: Any
    worker: Any                        # the actor class
    make_args: tuple
    workers: int
    collect: bool
    preview: bool
    overwrite: bool
    results: dict[str, BatchResult] = field(default_factory=dict)
    actors: list[Any] = field(default_factory=list)
    idle: list[Any] = field(default_factory=list)
    inflight: dict[Any, _Job] = field(default_factory=dict)
    lost: list[Path] = field(default_factory=list)   # outputs whose worker died while writing them
    started: int = 0
    # Names must be unique in the cluster, also against the workers of an earlier run still being ended.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def start_worker(self) -> None:
        actor = self.worker.options(name=f"{WORKER_NAME}-{self.run_id}-{self.started}").remote(*self.make_args)
        self.started += 1
        self.actors.append(actor)
        self.inflight[actor.setup.remote()] = _Job("setup", actor)

    def retire(self, actor: Any) -> None:
        """A worker that died: gone from the pool (``ray.kill`` makes sure), a fresh one in its place."""
        if actor in self.actors:
            self.actors.remove(actor)
            self.ray.kill(actor, no_restart=True)
            self.start_worker()

    def run(self, todo: list[tuple[BatchPerson, Path]], advance: Advance, counts: dict[str, int]) -> None:
        """Animate ``todo`` (people and their outputs); a person whose worker dies is retried once on
        another worker. A person's photos are read when it is sent (not all at once: a batch may
        hold many thousands of people)."""
        from ray.exceptions import ObjectLostError, OutOfMemoryError, RayActorError, RayTaskError, WorkerCrashedError

        worker_lost = (RayActorError, WorkerCrashedError, OutOfMemoryError, ObjectLostError)
        queue: deque[tuple[BatchPerson, Path, ShippedPerson | None, int]] = deque(
            (person, output, None, 1) for person, output in todo)
        for _ in range(min(self.workers, len(todo))):
            self.start_worker()
        setup_deaths = 0
        while queue or any(job.kind == "render" for job in self.inflight.values()):
            while queue and self.idle:
                person, output, shipped, attempt = queue.popleft()
                shipped = shipped or ShippedPerson.read(person, output)
                actor = self.idle.pop()
                self.inflight[actor.render.remote(shipped)] = _Job("render", actor, shipped, attempt)
            [ref], _ = self.ray.wait(list(self.inflight), num_returns=1)
            job = self.inflight.pop(ref)
            try:
                value = self.ray.get(ref)
            except RayTaskError as error:
                # The worker raised instead of reporting the person (its engine failed to build: a
                # typed error, shown as its one line), or a bug: the batch stops either way.
                if isinstance(error.cause, AnimateFaceError):
                    raise error.cause from None
                raise
            except worker_lost as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                if job.kind == "setup":
                    setup_deaths += 1
                    if setup_deaths > self.workers:
                        raise AnimateFaceError(f"Ray workers keep dying while loading the model: {reason}") \
                            from None
                    log.warning("a Ray worker died while loading the model (%s); starting another", reason)
                    self.retire(job.actor)
                    continue
                assert job.shipped is not None
                name = job.shipped.person.name
                self.lost.append(job.shipped.target)
                if not self.collect:
                    remove_partials(job.shipped.target, self.preview)
                self.retire(job.actor)
                if job.attempt == 1:
                    log.warning("%s: the Ray worker died (%s); retrying on another worker", name, reason)
                    queue.appendleft((job.shipped.person, job.shipped.output, job.shipped, 2))
                    continue
                result = BatchResult(name, "failed", 0.0, job.shipped.output,
                                     f"the Ray worker died twice while animating this person ({reason})")
                log.warning("%s: failed: %s", name, result.reason)
                self.record(result, advance, counts)
                continue
            self.idle.append(job.actor)
            if job.kind == "setup":
                log.info("Ray worker ready: %s", value)
                continue
            result, video, sheet = value
            if result.status == "failed":
                log.warning("%s: failed: %s", result.name, result.reason)
            elif self.collect:
                result = write_collected(result, video, sheet, self.overwrite)
            self.record(result, advance, counts)

    def record(self, result: BatchResult, advance: Advance, counts: dict[str, int]) -> None:
        self.results[result.name] = result
        counts[result.status] += 1
        advance(1)

    def stop(self) -> None:
        """End every worker; work still in flight is cancelled (a worker is killed mid-person) and
        the partial files of those people are deleted."""
        unfinished = [job.shipped for job in self.inflight.values() if job.kind == "render" and job.shipped]
        closing = [actor.close.remote() for actor in self.idle]
        if closing:
            self.ray.wait(closing, num_returns=len(closing), timeout=SHUTDOWN_WAIT_S)
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        if self.inflight:
            # Wait until the killed workers are gone, so none writes after the clean-up below.
            self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=SHUTDOWN_WAIT_S)
        if not self.collect:
            for target in [shipped.target for shipped in unfinished] + self.lost:
                remove_partials(target, self.preview)


def connect(ray: Any, address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None: as ``ray.init()`` resolves it: RAY_ADDRESS, a running
    local cluster, or a new local one); whether this call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    try:
        # Workers' logs stay on the workers: each person's failure is reported here, once.
        ray.init(address=address, logging_level=logging.ERROR,
                 log_to_driver=False)
    except ConnectionError as error:
        raise UsageError(f"cannot connect to the Ray cluster at {address or 'RAY_ADDRESS'} ({error})") from None
    return True


def run_ray_batch(engine: Engine, people: list[BatchPerson], driver: Driver, out_dir: str | Path,
                  finetune: FinetuneConfig, config: RenderConfig, face_index: int = 0,
                  progress: ProgressReporter | None = None, preview: bool = False, *,
                  address: str | None = None, collect: bool = False,
                  workers: int | None = None) -> list[BatchResult]:
    """``batch.run_batch`` on a Ray cluster: the same people, outputs, resume and results (in the
    people's order), with one progress stage over the people.

    ``engine`` and ``driver`` are the ones built here (the workers build the same engine; the
    driver's landmarks are sent, not tracked again). ``address``: the cluster (None: RAY_ADDRESS, a
    running local cluster, or a new local one; a Ray already initialised in this process is used as
    it is); ``collect``: the workers send the videos back and this machine writes them (otherwise
    ``out_dir`` must be storage every worker sees); ``workers``: how many (default: one per free CPU
    of the cluster).
    """
    ray = import_ray()
    progress = progress or SilentProgress()
    started = connect(ray, address)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    try:
        with progress.stage(PeopleLabel(counts), len(people)) as advance:
            results: dict[str, BatchResult] = {}
            todo = []
            for person in people:
                output = output_path(out_dir, person)
                result = skipped(person, output, config)
                if result is None:
                    todo.append((person, output))
                    continue
                results[person.name] = result
                counts["skipped"] += 1
                advance(1)
            if todo:
                results.update(_run_on_workers(ray, engine, driver, todo, finetune, config, face_index, preview,
                                               collect, workers, advance, counts))
    finally:
        if started:
            ray.shutdown()
    return [results[person.name] for person in people]


def _run_on_workers(ray: Any, engine: Engine, driver: Driver, todo: list[tuple[BatchPerson, Path]],
                    finetune: FinetuneConfig, config: RenderConfig, face_index: int, preview: bool, collect: bool,
                    workers: int | None, advance: Advance, counts: dict[str, int]) -> dict[str, BatchResult]:
    """Ship what every worker needs once, start the workers and feed them the people."""
    weights = weights_to_ship(engine)
    weights_ref = ray.put(read_files(sorted(p for p in weights.iterdir() if p.is_file()))) if weights else None
    driver_ref = ray.put(driver)
    driver_file_ref = ray.put(driver.path.read_bytes()) if driver.video is not None else None
    gpus = 1 if engine.device.type == "cuda" else 0
    worker_class = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(BatchWorker)
    if workers is None:
        workers = max(1, int(ray.available_resources().get("CPU", 1)))
    run = _RayRun(ray, worker_class, (EngineSpec.of(engine), weights_ref, driver_ref, driver_file_ref, finetune,
                                      config, face_index, preview, collect), workers, collect, preview,
                   config.overwrite)
    log.info("Ray batch: %d people on %d workers", len(todo), min(workers, len(todo)))
    try:
        run.run(todo, advance, counts)
    finally:
        # Also on Ctrl-C and on an error that stops the batch: no worker keeps running, no partial file stays.
        run.stop()
    return run.results

"""`batch --ray` on a local Ray (2 CPUs): the same outputs, table, exit code and resume as the local
batch; a worker killed mid-person; --collect; Ctrl-C. Skipped when Ray (the `ray` extra) is absent."""

from __future__ import annotations

import logging
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from animate_cli.cli import app
from animate_cli.io.video import iter_frames, probe_output
from conftest import REPO, cut_clip, make_batch_people

runner = CliRunner()
TINY = ("--finetune-steps", 0, "--landmarks", "dlib", "--crop-only")


def run(*args):
    # Wide enough that the results table never wraps: its rows are compared line by line.
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()
    # The workers these tests killed could not delete their scratch folders; the next worker would.
    from animate_cli.ray_batch import remove_stale_scratch

    remove_stale_scratch(Path(tempfile.gettempdir()))


@pytest.fixture(scope="module")
def clip_3s(tmp_path_factory, sample_driver) -> Path:
    """3 s of the sample driver: long enough to catch a worker in the middle of a person."""
    return cut_clip(sample_driver, tmp_path_factory.mktemp("driver") / "three.mp4", 75)


def table_rows(output: str) -> list[list[str]]:
    """The results table's rows, seconds left out (they differ between runs)."""
    rows = [[cell.strip() for cell in line.strip("│").split("│")] for line in output.splitlines()
            if line.startswith("│")]
    return [[person, status, reason] for person, status, _seconds, reason in rows]


def assert_same_frames(a: Path, b: Path) -> None:
    first, second = (np.stack(list(iter_frames(path))).astype(np.int16) for path in (a, b))
    assert first.shape == second.shape
    assert np.abs(first - second).max() <= 1, f"{a.name}: frames differ by more than encoder noise"


def workers(ray) -> set[str]:
    from animate_cli.ray_batch import WORKER_NAME

    return {name for name in ray.util.list_named_actors() if name.startswith(WORKER_NAME)}


def wait_until_gone(ray, names: set[str]) -> set[str]:
    """The workers among ``names`` still there after a while (``ray.kill`` ends them asynchronously)."""
    deadline = time.monotonic() + 60
    while names & workers(ray) and time.monotonic() < deadline:
        time.sleep(0.1)
    return names & workers(ray)


def hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_ray_batch_writes_what_the_local_batch_writes_then_resumes(local_ray, tmp_path, portrait_path,
                                                                     short_driver, tiny_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them, in both tables
    make_batch_people(Path("people"), portrait_path)
    args = ("batch", "people", "--drive", short_driver, "--out-dir", "out", "--weights", tiny_weights, *TINY)
    local = run(*args)
    assert local.exit_code == 6, local.output
    Path("out").rename("local")

    on_ray = run(*args, "--ray", "--ray-workers", 2)
    assert on_ray.exit_code == 6, on_ray.output
    assert table_rows(on_ray.output) == table_rows(local.output)
    assert [row[1] for row in table_rows(on_ray.output)] == ["done", "done", "failed", "done", "failed"]
    assert "people/wall.png: no face found" in on_ray.output
    assert "people 3 done · 0 skipped · 2 failed" in on_ray.output  # the one bar over people
    assert sorted(p.name for p in Path("out").iterdir()) == ["ann.mp4", "bob.mp4", "cat.mp4"]
    for name in ("ann.mp4", "bob.mp4", "cat.mp4"):
        assert_same_frames(Path("local") / name, Path("out") / name)

    stamps = {p.name: p.stat().st_mtime_ns for p in Path("out").iterdir()}
    again = run(*args, "--ray")
    assert again.exit_code == 6, again.output
    assert [row[1] for row in table_rows(again.output)] == ["skipped", "skipped", "failed", "skipped", "failed"]
    assert {p.name: p.stat().st_mtime_ns for p in Path("out").iterdir()} == stamps


def test_collect_writes_the_same_files(local_ray, tmp_path, portrait_path, short_driver, tiny_weights):
    people = make_batch_people(tmp_path / "people", portrait_path)
    common = ("batch", people, "--drive", short_driver, "--weights", tiny_weights, *TINY, "--preview", "-q")
    shared = run(*common, "--out-dir", tmp_path / "shared", "--ray")
    collected = run(*common, "--out-dir", tmp_path / "collected", "--ray", "--collect")
    assert shared.exit_code == collected.exit_code == 6, collected.output
    names = sorted(p.name for p in (tmp_path / "shared").iterdir())
    assert names == ["ann.mp4", "ann.png", "bob.mp4", "bob.png", "cat.mp4", "cat.png"]
    assert sorted(p.name for p in (tmp_path / "collected").iterdir()) == names
    for name in ("ann.mp4", "bob.mp4", "cat.mp4"):
        assert_same_frames(tmp_path / "shared" / name, tmp_path / "collected" / name)
        assert probe_output(tmp_path / "collected" / name)["has_audio"]


def _batch_parts(people: Path, driver: Path, weights: Path):
    """What the batch command prepares before the people: engine, people, driver, configs."""
    from animate_cli.batch import discover_people
    from animate_cli.config import FinetuneConfig, RenderConfig
    from animate_cli.jobs import build_engine
    from animate_cli.render.pipeline import load_driver

    engine = build_engine(str(weights), "dlib", "cpu")
    return (engine, discover_people(people), load_driver(driver, engine.backend, 1.0),
            FinetuneConfig(steps=0), RenderConfig(crop_only=True))


def test_a_worker_killed_mid_person_has_the_person_retried_and_written(local_ray, tmp_path, portrait_path,
                                                                       clip_3s, tiny_weights, caplog):
    from animate_cli.ray_batch import run_ray_batch

    people = tmp_path / "people"
    people.mkdir()
    (people / "ann.jpg").write_bytes(portrait_path.read_bytes())
    engine, found, driver, finetune, config = _batch_parts(people, clip_3s, tiny_weights)
    out = tmp_path / "out"
    out.mkdir()
    outcome, earlier = {}, workers(local_ray)

    def batch():
        outcome["results"] = run_ray_batch(engine, found, driver, out, finetune, config, workers=1)

    thread = threading.Thread(target=batch)
    with caplog.at_level(logging.WARNING, logger="animate_cli.ray_batch"):
        thread.start()
        # One worker: the one writing ann's partial video is the one to kill.
        deadline = time.monotonic() + 120
        while not list(out.glob(".ann.*")) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert list(out.glob(".ann.*")), "the worker never started writing"
        [name] = workers(local_ray) - earlier
        local_ray.kill(local_ray.get_actor(name))
        thread.join(timeout=180)
    assert not thread.is_alive()
    [result] = outcome["results"]
    assert (result.status, result.output) == ("done", out / "ann.mp4")
    assert "ann: the Ray worker died" in caplog.text and "retrying on another worker" in caplog.text
    assert probe_output(out / "ann.mp4")["frame_count"] == 75
    assert hidden_files(out) == []


def test_interrupting_cancels_the_outstanding_people_and_leaves_no_partial_file(local_ray, tmp_path, portrait_path,
                                                                               clip_3s, tiny_weights):
    from animate_cli.progress import SilentProgress
    from animate_cli.ray_batch import run_ray_batch

    people = tmp_path / "people"
    people.mkdir()
    for name in ("ann", "bob", "cat", "dan"):
        (people / f"{name}.jpg").write_bytes(portrait_path.read_bytes())
    engine, found, driver, finetune, config = _batch_parts(people, clip_3s, tiny_weights)
    out = tmp_path / "out"
    out.mkdir()

    class CtrlCAfterFirstPerson(SilentProgress):
        """Ctrl-C as the first person finishes: the other worker is then in the middle of one."""

        @contextlib.contextmanager
        def stage(self, name, total):
            def advance(n=1):
                seen.update(workers(local_ray) - earlier)
                raise KeyboardInterrupt

            yield advance

    earlier, seen = workers(local_ray), set()
    with pytest.raises(KeyboardInterrupt):
        run_ray_batch(engine, found, driver, out, finetune, config, progress=CtrlCAfterFirstPerson(), workers=2)
    assert len(list(out.glob("*.mp4"))) <= 2  # at most the two in flight got finished, nobody else was started
    assert hidden_files(out) == []
    assert len(seen) == 2 and not wait_until_gone(local_ray, seen)  # both workers ended


def test_ray_options_fail_at_once_with_one_line(tmp_path, portrait_path, short_driver, monkeypatch):
    people = tmp_path / "people"
    people.mkdir()
    (people / "ann.jpg").write_bytes(portrait_path.read_bytes())
    common = ("batch", people, "--drive", short_driver, "--out-dir", tmp_path / "out", "--renderer", "warp")
    result = run(*common, "--collect")
    assert result.exit_code == 2 and "--collect applies to --ray" in result.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    result = run(*common, "--ray")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install "ray>=2.40"' in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_plain_batch_never_imports_ray():
    code = ("import sys; import animate_cli.cli, animate_cli.batch, animate_cli.ray_batch; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})


def test_failure_reasons_name_the_files_as_on_the_submitting_machine():
    from animate_cli.ray_batch import relabel

    renames = {Path("/tmp/w/1"): Path("people"), Path("/tmp/w/out"): Path("out")}
    assert relabel("/tmp/w/1/wall.png: no face found", renames) == "people/wall.png: no face found"
    assert relabel("/tmp/w/out: folder is not writable", renames) == "out: folder is not writable"
    assert relabel("/tmp/w/10/a.png: no face found", renames) == "/tmp/w/10/a.png: no face found"
    assert relabel("/tmp/w/1/a.png: bad", {Path("/tmp/w/1"): Path(".")}) == "a.png: bad"


def test_a_worker_clears_the_scratch_folders_of_workers_that_are_gone(tmp_path):
    from animate_cli.ray_batch import SCRATCH_PREFIX, remove_stale_scratch

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = tmp_path / f"{SCRATCH_PREFIX}{gone.stdout.strip()}-x1", tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-x2"
    for folder in (dead, alive):
        (folder / "weights").mkdir(parents=True)
    remove_stale_scratch(tmp_path)
    assert not dead.exists() and alive.exists()

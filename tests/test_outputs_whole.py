"""Outputs appear whole or not at all, even when the process dies between two renames or two runs write at once."""
import errno
import hashlib
import os
import subprocess
import sys
import time

import pytest

from stages import prepare
from stages.lib import atomic, paths
from stages.lib.atomic import atomic_directory
from tests.helpers import REPO, run_module, write_params


def left_over(folder) -> list[str]:
    """What a folder holds besides the lock files (hidden, and ignored by git)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.endswith(".lock"))


def write_output(target, text: str) -> None:
    with atomic_directory(target) as out:
        (out / "result.txt").write_text(text)


def test_a_failing_block_keeps_the_old_output(tmp_path):
    target = tmp_path / "output"
    write_output(target, "old")
    with pytest.raises(ValueError):
        with atomic_directory(target) as out:
            (out / "result.txt").write_text("half")
            raise ValueError("the stage failed")
    assert (target / "result.txt").read_text() == "old"
    assert left_over(tmp_path) == ["output"]


@pytest.mark.parametrize("writer", [atomic.atomic_directory, atomic.atomic_file])
@pytest.mark.parametrize("code, named", [(errno.ENOSPC, True), (errno.EFBIG, True), (errno.ECONNRESET, False)])
def test_a_full_disk_names_the_output_it_stopped_and_other_errors_keep_their_text(tmp_path, writer, code, named):
    # numpy's and zipfile's writes raise OSErrors that name no file; a full disk should say which output it hit.
    target = tmp_path / "output.bin"
    with pytest.raises(OSError) as raised:
        with writer(target):
            raise OSError(code, os.strerror(code))
    assert raised.value.errno == code
    assert raised.value.filename == (str(target) if named else None)
    assert left_over(tmp_path) == []


def test_a_kill_between_the_renames_loses_nothing(tmp_path, monkeypatch):
    target = tmp_path / "output"
    write_output(target, "old")
    real_replace = os.replace

    def killed_after_moving_the_old_output_aside(source, destination):
        real_replace(source, destination)
        if str(destination).endswith(".previous"):
            raise KeyboardInterrupt  # stands in for SIGKILL at the worst moment

    monkeypatch.setattr(atomic.os, "replace", killed_after_moving_the_old_output_aside)
    with pytest.raises(KeyboardInterrupt):
        write_output(target, "new")
    monkeypatch.undo()
    assert not target.exists() and (tmp_path / "output.previous/result.txt").read_text() == "old"

    with pytest.raises(ValueError):  # the next run fails too: the old output is back all the same
        with atomic_directory(target):
            raise ValueError("the stage failed again")
    assert (target / "result.txt").read_text() == "old"
    write_output(target, "new")
    assert (target / "result.txt").read_text() == "new"
    assert left_over(tmp_path) == ["output"]


# Holds `target`'s output open until told to finish; the test starts a second writer meanwhile.
FIRST_WRITER = """
import sys, time
from pathlib import Path
from stages.lib.atomic import atomic_directory
target, ready, go = map(Path, sys.argv[1:])
with atomic_directory(target) as out:
    (out / "result.txt").write_text("first")
    ready.touch()
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""
SECOND_WRITER = """
import sys
from pathlib import Path
from stages.lib.atomic import atomic_directory
target, entered = map(Path, sys.argv[1:])
with atomic_directory(target) as out:
    entered.touch()
    (out / "result.txt").write_text("second")
"""


def start(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_of_an_output_waits_for_the_first(tmp_path):
    target, ready, go, entered = (tmp_path / name for name in ("output", "ready", "go", "entered"))
    first = start(FIRST_WRITER, target, ready, go)
    wait_for(ready)
    second = start(SECOND_WRITER, target, entered)
    time.sleep(2)  # long enough for the second to start, clear the first's work and write its own
    assert not entered.exists(), "the second writer did not wait"
    go.touch()
    assert first.wait(60) == 0 and second.wait(60) == 0, (first.stderr.read(), second.stderr.read())
    assert "waiting for another run that is using" in second.stderr.read()
    assert (target / "result.txt").read_text() == "second"
    assert not list(tmp_path.glob("*partial*")) and not list(tmp_path.glob("*.previous"))


def test_partial_outputs_of_dead_processes_are_cleaned_and_live_ones_kept(tmp_path):
    gone = 4_194_305  # above Linux's largest process id: never a live process
    target = tmp_path / "metrics.json"
    dead_file = tmp_path / f".metrics.{gone}.partial.json"
    live_file = tmp_path / f".metrics.{os.getppid()}.partial.json"  # another writer, still running
    dead_folder = tmp_path / f"output.{gone}.partial"
    for path in (dead_file, live_file):
        path.write_text("{}")
    dead_folder.mkdir()
    (tmp_path / "output.partial").mkdir()  # the name older releases used
    atomic.write_json(target, {"accuracy": 1.0})
    write_output(tmp_path / "output", "new")
    assert not dead_file.exists() and not dead_folder.exists() and not (tmp_path / "output.partial").exists()
    assert live_file.exists()


@pytest.mark.slow
def test_two_prepares_at_once_leave_the_output_a_solo_run_writes(tmp_path):
    solo, shared = tmp_path / "solo", tmp_path / "shared"
    for folder in (solo, shared):
        folder.mkdir()
        write_params(folder, {"data": {"limit": 2000, "val_size": 200}})
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = [subprocess.Popen([sys.executable, "-m", "stages.prepare"], cwd=shared, env=env, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    assert run_module("stages.prepare", solo).returncode == 0
    for run in runs:
        assert run.wait(300) == 0, run.stderr.read()
    assert digest(shared / "data/prepared") == digest(solo / "data/prepared")
    assert left_over(shared / "data") == ["prepared"]


def digest(folder) -> dict:
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@pytest.mark.slow
@pytest.mark.parametrize("stage, locked, output", [("train", paths.MODELS, paths.MODELS),
                                                   ("evaluate", paths.METRICS, paths.METRICS),
                                                   ("extract", paths.PREPARED, paths.FEATURES)])
def test_stages_wait_for_a_run_writing_their_outputs_or_inputs(evaluated, stage, locked, output):
    """Another run of the stage, or a hand-run prepare while extract reads data/prepared, from this process."""
    before = digest(output)
    with atomic.exclusive(locked):
        run = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=evaluated, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        waiting = ""
        while f"waiting for another run that is using {locked}" not in waiting:
            line = run.stderr.readline()
            assert line, f"{stage} ended without waiting: {waiting[-3000:]}"
            waiting += line
        time.sleep(1)
        assert run.poll() is None and digest(output) == before  # it waits, and writes nothing meanwhile
    assert run.wait(300) == 0, run.stderr.read()[-3000:]


def test_a_stage_clears_what_killed_writers_left_and_keeps_a_running_ones(workdir):
    """DVC may restore a killed stage's outputs from its run cache and never run it again: any stage cleans up."""
    dead = [workdir / "data/features.99999999.partial", workdir / "models/.cifar10.99999999.partial.keras",
            workdir / "metrics/train.99999999.partial", workdir / "metrics/timing/.train.99999999.partial.json"]
    running = workdir / f"models/.cifar10.{os.getpid()}.partial.keras"
    for path in dead + [running]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if path.suffix == ".partial" else path.write_bytes(b"half")
    prepare.main()
    assert [path for path in dead if path.exists()] == [] and running.exists()
    assert paths.PREPARED_INFO.is_file()

"""Outputs appear whole or not at all: write beside the target, rename on success."""
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(path: Path):
    """Yield an empty folder that replaces `path` only if the block succeeds."""
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)
    os.replace(partial, path)


@contextmanager
def atomic_file(path: Path):
    """Yield a temporary path with `path`'s suffix (Keras checks it) that replaces `path` on success.

    The name holds the process id: two processes writing one file (say, two experiments fetching one
    archive) each write their own and the last rename wins, never a mix of both.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def write_json(path: Path, data) -> None:
    with atomic_file(path) as partial:
        partial.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())

"""Outputs appear whole or not at all: write beside the target, rename on success."""
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_directory(path: Path):
    """Yield an empty folder that replaces `path` only if the block succeeds.

    The old output is renamed aside before the new one is renamed in, and deleted only then: a kill at
    any moment leaves the old output or the new one, and the next call puts back an old one left aside.
    """
    partial, previous = path.with_name(path.name + ".partial"), path.with_name(path.name + ".previous")
    if previous.exists() and not path.exists():
        os.replace(previous, path)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        if error.filename is None:  # numpy's writes name no file: name the output
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if path.exists():
        os.replace(path, previous)
    os.replace(partial, path)
    shutil.rmtree(previous, ignore_errors=True)


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

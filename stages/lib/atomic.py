"""Outputs appear whole or not at all: write beside the target, rename on success; one writer at a time."""
import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import resource
import shutil
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("atomic")

OUT_OF_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # a full disk, a file-size limit, a quota


@contextmanager
def exclusive(output: Path):
    """Hold `output`'s lock (a hidden file beside it) for the block: a second run writing or reading the same
    output waits for the first. The system releases the lock when its process ends, however it ends."""
    output.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(output.with_name(f".{output.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another run that is using %s", output)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def holding(*outputs: Path):
    """The locks of a stage's inputs and outputs, for the whole stage: a hand-run writer of an input waits,
    instead of changing it half-way through the read. Every stage takes them in the pipeline's order, so
    no two runs can each hold a lock the other waits for."""
    with contextlib.ExitStack() as locks:
        for output in outputs:
            locks.enter_context(exclusive(output))
        yield


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        pass
    return False


PARTIAL = re.compile(r"^\.?.+\.(?P<pid>\d+)\.partial(\.[^.]+)?$")  # both writers' names for a write in progress


def remove_dead_partials(folder: Path) -> None:
    """What writers killed mid-write left in `folder`: a later run of that stage would clean it, but DVC may
    never run it again (it restores outputs from its run cache), and a running writer's are kept."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        if (match := PARTIAL.match(entry.name)) and _process_is_gone(int(match["pid"])):
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _naming_the_output(error: BaseException, output: Path) -> BaseException:
    """The error to raise: a full disk met by a write that names no file (numpy's and zipfile's do not) names
    the output it stopped."""
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE and error.filename is None:
        named = OSError(error.errno, error.strerror, str(output))
        named.__cause__ = error
        return named
    return error


@contextmanager
def atomic_directory(path: Path):
    """Yield an empty folder that replaces `path` only if the block succeeds.

    The old output is renamed aside before the new one is renamed in, and deleted only then: a kill at
    any moment leaves the old output or the new one, and the next call puts back an old one left aside.
    """
    with exclusive(path):
        previous = path.with_name(path.name + ".previous")
        if previous.exists() and not path.exists():
            os.replace(previous, path)
        shutil.rmtree(previous, ignore_errors=True)
        for stale in path.parent.glob(f"{path.name}.*partial"):  # left by killed runs: none is running now
            _remove(stale)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.mkdir()
        try:
            yield partial
        except BaseException as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise _naming_the_output(error, path)
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
    for other in path.parent.glob(f".{path.stem}.*.partial{path.suffix}"):
        pid = other.name[len(path.stem) + 2:-len(f".partial{path.suffix}")]
        if not pid.isdigit() or _process_is_gone(int(pid)):  # left by a killed run
            _remove(other)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield partial
    except BaseException as error:
        partial.unlink(missing_ok=True)
        raise _naming_the_output(error, path)
    os.replace(partial, path)


@contextmanager
def atomic_files(*paths: Path):
    """atomic_file for files that belong together: a {path: partial} to write, each renamed into place in the
    order given once all are written, so a failure while writing (a full disk) leaves the previous set whole."""
    with contextlib.ExitStack() as stack:
        partials = {path: stack.enter_context(atomic_file(path)) for path in reversed(paths)}
        try:
            yield partials
        except OSError as error:  # which file met a full disk is unknown here: name the set's folder
            if error.errno in OUT_OF_SPACE and error.filename is None:
                raise OSError(error.errno, error.strerror, str(paths[0].parent)) from error
            raise


def require_room(target: Path, size: int) -> None:
    """Refuse, as a full disk would, to write `size` bytes to `target` where they cannot fit: HDF5's writer
    can crash the process instead of failing on a full disk, with other files of its set half-replaced."""
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and size > limit:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(target))
    if shutil.disk_usage(target.parent).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))


def json_text(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def write_json(path: Path, data) -> None:
    with atomic_file(path) as partial:
        partial.write_text(json_text(data))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()

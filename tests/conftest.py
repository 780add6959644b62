"""Fixtures: the real params.yaml shrunk to tiny synthetic runs in a temporary folder, and the outputs of
the tiny pipeline made once per test run and copied to each test that starts from them. The functions
they use are in tests/helpers.py."""
import contextlib
import functools
import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers import SMALL, copy_repo, dvc, run_stages, write_params


def starts_from_shared_run(item) -> bool:
    return "reproduced" in item.fixturenames  # the fixture of the shared `dvc repro`


def pytest_collection_modifyitems(items):
    """Long work first, slow tests and the groups that share a fixture (one worker runs a group whole):
    the workers then share out the short tests and finish together, instead of one waiting on a
    long test or group that happened to come last. The short tests that start from the shared run come
    last: the first worker makes it meanwhile (shared_run_made_first)."""
    def order(item) -> tuple[bool, bool]:
        short = not (item.get_closest_marker("slow") or item.get_closest_marker("xdist_group"))
        return short, short and starts_from_shared_run(item)

    items.sort(key=order)


@pytest.fixture(scope="session", autouse=True)
def shared_run_made_first(request):
    """The first worker makes the shared `dvc repro` before its first test, if any test of this run starts from
    it: the others run the rest meanwhile, instead of each waiting for it at its first such test."""
    first = os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0"
    if first and any(starts_from_shared_run(item) for item in request.session.items):
        request.getfixturevalue("evaluated_once")


@pytest.fixture(autouse=True)
def own_keras_home(tmp_path, monkeypatch):
    """Keras's home holds the shared CIFAR-10 archive and ImageNet weights: a test sees its own, empty one,
    whatever this machine has downloaded."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))


@pytest.fixture(autouse=True)
def fresh_tensorflow_state():
    """Op determinism and the mixed-precision policy are process-wide: no test inherits another's."""
    yield
    if "tensorflow" in sys.modules:
        import keras
        from tensorflow.python.framework import config

        config.disable_op_determinism()
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary folder, made current, holding a tiny synthetic params.yaml."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {})
    (tmp_path / "weights").mkdir()
    return tmp_path


def made_once_per_run(tmp_path_factory, name: str, make) -> Path:
    """A folder `make` fills once for the whole test run: a session fixture alone runs once in each
    pytest-xdist worker. The first worker to ask makes it while any other waits, then all share it."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the workers' common folder
    folder, made = root / name, root / f"{name}.made"
    with FileLock(root / f"{name}.lock"):
        if not made.exists():  # none when a worker stopped half-way: make it again
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            made.touch()
    return folder


@pytest.fixture(scope="session", autouse=True)
def shared_jax_cache(tmp_path_factory):
    """JAX's compilation cache, one for the whole run as one user's runs share theirs: every process on JAX
    would otherwise compile a backbone's hundreds of functions again (KERAS_HOME, its default, is per test)."""
    folder = made_once_per_run(tmp_path_factory, "jax-cache", lambda folder: None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(folder))
        yield


@pytest.fixture(scope="session", autouse=True)
def ray_reports_no_usage():
    """The tests' Ray clusters run offline: Ray Data gathers no usage statistics, and starts no actor for them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield


def prepare_and_extract(folder: Path, changes: dict) -> None:
    from stages import extract, prepare

    write_params(folder, changes)
    with contextlib.chdir(folder):
        run_stages(prepare, extract)


@pytest.fixture(scope="session")
def extracted_once(evaluated_once):
    """The tiny params' prepared images and features, from the shared run: tests copy them rather than
    recompute them."""
    return evaluated_once / "data"


@pytest.fixture
def extracted(extracted_once, workdir):
    """A workdir whose data/prepared and data/features hold the tiny params' outputs."""
    shutil.copytree(extracted_once, workdir / "data")
    return workdir


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory):
    """The SMALL params' prepare + extract (TensorFlow), shared as extracted_once is."""
    return made_once_per_run(tmp_path_factory, "small", functools.partial(prepare_and_extract, changes=SMALL)) / "data"


@pytest.fixture
def small(small_prepared, workdir):
    """A workdir with the small prepared set and its TensorFlow features."""
    write_params(workdir, SMALL)
    shutil.copytree(small_prepared, workdir / "data")
    return workdir


@pytest.fixture(scope="session")
def evaluated_once(reproduced, tmp_path_factory):
    """The whole tiny pipeline's outputs, as the shared `dvc repro` made them."""
    def copy_outputs(folder: Path) -> None:
        for name in ("data/prepared", "data/features", "models", "metrics"):
            # Writable copies (DVC links its outputs read-only from its cache), without DVC's .gitignore files.
            shutil.copytree(reproduced / name, folder / name, copy_function=shutil.copyfile,
                            ignore=shutil.ignore_patterns(".gitignore"))

    return made_once_per_run(tmp_path_factory, "evaluated", copy_outputs)


@pytest.fixture
def evaluated(evaluated_once, workdir):
    """A workdir holding the whole tiny pipeline's outputs: data, models and metrics."""
    for name in ("data", "models", "metrics"):
        shutil.copytree(evaluated_once / name, workdir / name)
    return workdir


def reproduce(folder: Path) -> None:
    repo = copy_repo(folder / "repo")
    (folder / "repro.log").write_text(dvc(repo, "repro", with_stderr=True))  # beside the repo: not in git


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """One `dvc repro` of the tiny pipeline in a repository copy, shared by the tests that start from it."""
    return made_once_per_run(tmp_path_factory, "reproduced", reproduce) / "repo"


@pytest.fixture
def reproduced_repo(reproduced, tmp_path):
    """A test's own copy of the reproduced repository, DVC cache included, to change as it likes."""
    return Path(shutil.copytree(reproduced, tmp_path / "repo", symlinks=True))

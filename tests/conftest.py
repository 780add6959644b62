"""Shared fixtures: the real params.yaml, shrunk to tiny synthetic runs in a temporary folder."""
import contextlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]

# Small enough for 2 CPU cores, large enough that the head learns the synthetic classes.
TINY = {
    "data": {"source": "synthetic", "image_size": 32, "val_size": 100, "limit": 400},
    "model": {"weights": "none"},
    "extract": {"engine": "tensorflow"},  # XLA's and OpenVINO's compile time would dominate; tests/test_engines.py
    "train": {"epochs": 5},
}

# The synthetic classes through a random DenseNet-121: chance is 0.1, a working pipeline reaches 0.6-0.8.
ABOVE_CHANCE = 0.45
# For backbones weaker on them (a random VGG-16 reaches about 0.35): chance plus five binomial standard
# errors on the tiny test split's 400 images, 0.175.
CLEARLY_ABOVE_CHANCE = 0.1 + 5 * (0.1 * 0.9 / 400) ** 0.5

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Pipeline Tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "Pipeline Tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def merged(base: dict, changes: dict) -> dict:
    result = {section: dict(values) for section, values in base.items()}
    for section, values in changes.items():
        result.setdefault(section, {}).update(values)
    return result


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(folder: Path, changes: dict) -> dict:
    params = merged(merged(repo_params(), TINY), changes)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def dvc_env() -> dict:
    """dvc, and the `python` of dvc.yaml's commands, from this interpreter's environment first: pytest run
    as .venv/bin/python without activating it still runs the virtual environment's."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, **GIT_IDENTITY, "PATH": path, "PYTHONPATH": str(REPO), "DVC_NO_ANALYTICS": "1"}


def dvc(repo, *args: str) -> str:
    """Run a dvc command in `repo` as a user would; its stdout, or the test fails with its output."""
    result = subprocess.run(["dvc", *args], cwd=repo, env=dvc_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pytest_collection_modifyitems(items):
    """Long work first, slow tests and the groups that share a fixture (one worker runs a group whole):
    the two workers then share out the short tests and finish together, instead of one waiting on a
    long test or group that happened to come last."""
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or item.get_closest_marker("xdist_group")))


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


def prepare_and_extract(folder: Path) -> None:
    from stages import extract, prepare

    write_params(folder, {})
    with contextlib.chdir(folder):
        run_stages(prepare, extract)


@pytest.fixture(scope="session")
def extracted_once(tmp_path_factory):
    """One prepare + extract of the tiny params, shared: tests copy it rather than recompute it."""
    return made_once_per_run(tmp_path_factory, "extracted", prepare_and_extract) / "data"


@pytest.fixture
def extracted(extracted_once, workdir):
    """A workdir whose data/prepared and data/features hold the tiny params' outputs."""
    shutil.copytree(extracted_once, workdir / "data")
    return workdir


# Tests that start from the tiny train + evaluate run in one pytest-xdist worker, which makes it once.
EVALUATED_GROUP = pytest.mark.xdist_group("evaluated")


@pytest.fixture(scope="session")
def evaluated_once(extracted_once, tmp_path_factory):
    """The tiny params' train + evaluate on the shared features, run once."""
    from stages import evaluate, train

    folder = tmp_path_factory.mktemp("evaluated")
    write_params(folder, {})
    shutil.copytree(extracted_once, folder / "data")
    with contextlib.chdir(folder):
        run_stages(train, evaluate)
    return folder


@pytest.fixture
def evaluated(evaluated_once, workdir):
    """A workdir holding the whole tiny pipeline's outputs: data, models and metrics."""
    for name in ("data", "models", "metrics"):
        shutil.copytree(evaluated_once / name, workdir / name)
    return workdir


def saved_weights(folder: Path, layer: str) -> dict[str, np.ndarray]:
    """A layer of the classifier (the head, or the backbone) as train saved it, by the name the .h5 file
    gives each weight (the backbone's "conv1_bn/gamma", the head's "head/predictions/kernel"), read
    without building the model."""
    with h5py.File(folder / "models/cifar10.h5", "r") as saved:
        group = saved[f"model_weights/{layer}"]
        return {name: group[name][()] for name in group.attrs["weight_names"]}


def saved_head_weights(folder: Path) -> list[np.ndarray]:
    return list(saved_weights(folder, "head").values())


def run_stages(*stages):
    """Run stage modules' run() in order with the current folder's params.yaml; returns the params."""
    from stages.lib.params import load_params

    params = load_params()
    for stage in stages:
        stage.run(params)
    return params


def run_module(module: str, cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m module` as a user would, from `cwd`, with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **GIT_IDENTITY}
    env.pop("PIPELINE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def predict_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """stages.predict's main(), as the command runs it; its exit status, stdout and stderr."""
    from stages import predict

    try:
        predict.main(list(argv))
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    output = capsys.readouterr()
    return status, output.out, output.err


def cifar_batch(images: np.ndarray, labels) -> bytes:
    """A batch in the official format: channel-planar uint8 rows, bytes keys, protocol 2."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps({b"batch_label": b"fabricated", b"labels": [int(label) for label in labels], b"data": rows,
                         b"filenames": [b"x.png"] * len(images)}, protocol=2)


def write_tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def fabricated_cifar(path: Path, per_batch=(7, 5, 6, 4, 3), test_count=9, seed=0):
    """A CIFAR-10 python tarball with odd batch sizes; returns it and the images and labels it holds."""
    rng = np.random.default_rng(seed)
    members, splits = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": []}, protocol=2)}, {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, count in zip(names, (*per_batch, test_count)):
        images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count)
        members[f"cifar-10-batches-py/{name}"] = cifar_batch(images, labels)
        splits[name] = (images, labels)
    return write_tarball(path, members), splits


# Tests that start from one `dvc repro` run in one pytest-xdist worker, which makes it once.
REPRODUCED_GROUP = pytest.mark.xdist_group("reproduced")


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory):
    """One `dvc repro` of the tiny pipeline in a repository copy, shared by the tests that start from it."""
    repo = copy_repo(tmp_path_factory.mktemp("reproduced") / "repo")
    dvc(repo, "repro")
    return repo


@pytest.fixture
def reproduced_repo(reproduced, tmp_path):
    """A test's own copy of the reproduced repository, DVC cache included, to change as it likes."""
    return Path(shutil.copytree(reproduced, tmp_path / "repo", symlinks=True))


def copy_repo(copy: Path) -> Path:
    """The repository's tracked files in a fresh git + DVC repository, with a tiny synthetic params.yaml."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    env = {**os.environ, **GIT_IDENTITY}
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True, env=env)
    write_params(copy, {})
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "tiny synthetic run"], cwd=copy, check=True, env=env)
    return copy

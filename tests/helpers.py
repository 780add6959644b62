"""What the tests share besides fixtures: the tiny params, running stages and commands as users do, and
fabricators of the files a user would bring (CIFAR-10 tarballs, PNG headers) or a run would leave."""
import ast
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Small enough for 2 CPU cores, large enough that the head learns the synthetic classes.
TINY = {
    "data": {"source": "synthetic", "image_size": 32, "val_size": 100, "limit": 400},
    "model": {"weights": "none"},
    "extract": {"engine": "tensorflow"},  # XLA's and OpenVINO's compile time would dominate: test_engines_agree.py
    "train": {"epochs": 5},
}

# Smaller still, for the engines' tests: 30 + 10 + 40 images in 5 batches of 16, the last padded.
SMALL = {"data": {"limit": 40, "val_size": 10}, "extract": {"batch_size": 16}}

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


def dvc(repo, *args: str, with_stderr: bool = False) -> str:
    """Run a dvc command in `repo` as a user would; its stdout (and stderr after it, if asked), or the test
    fails with its output."""
    result = subprocess.run(["dvc", *args], cwd=repo, env=dvc_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr if with_stderr else result.stdout


def run_stages(*stages):
    """Run stage modules' run() in order with the current folder's params.yaml; returns the params."""
    from stages.lib.params import load_params

    params = load_params()
    for stage in stages:
        stage.run(params)
    return params


def run_module(module: str, cwd: Path, *args: str, timeout: float = 600,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module` as a user would, from `cwd`, with the repo importable (and `env` set)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **GIT_IDENTITY, **(env or {})}
    env.pop("PIPELINE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_python(cwd: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` from `cwd`, in a process of its own (Keras's backend is chosen once per process)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def run_measured(cwd, *arguments: str) -> tuple[subprocess.CompletedProcess, float, int]:
    """`python *arguments` in a fresh parent whose only child it is: result, seconds, peak RSS in bytes."""
    measure = ("import resource, subprocess, sys, time; start = time.monotonic(); "
               "run = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stdout.write(run.stdout); sys.stderr.write(run.stderr[-100000:]); "
               "print(run.returncode, time.monotonic() - start, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, *arguments], cwd=cwd,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=600)
    *stderr, summary = result.stderr.strip().splitlines()
    returncode, seconds, peak = summary.split()
    return (subprocess.CompletedProcess(result.args, int(returncode), result.stdout, "\n".join(stderr)),
            float(seconds), int(peak))


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


# The files a stage runs, for dvc.yaml's exact code dependencies.
PACKAGE = "stages"


def module_file(module: str) -> Path:
    """A module's file, or a package's __init__.py."""
    path = REPO / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The stages.* modules a file imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name).is_file()}


def packages_of(module: str) -> set[str]:
    """stages.lib.paths is in stages and stages.lib: importing it runs both __init__.py files."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts))}


def files_run_by(module: str) -> set[str]:
    """Every file of the package that `python -m module` executes: its imports, transitively, and the
    __init__.py of every package on the way."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += imported_modules(module_file(current)) | packages_of(current)
    return {module_file(name).relative_to(REPO).as_posix() for name in seen}


def stage_code() -> dict[str, tuple[set[str], set[str]]]:
    """Per stage in dvc.yaml: the code files it declares, and the ones its command runs."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        module = stage["cmd"].removeprefix("python -m ")
        declared = {dep for dep in stage["deps"] if dep.endswith(".py")}
        result[name] = declared, files_run_by(module)
    return result


# Fabricated inputs and read-back outputs.

def saved_weights(folder: Path, layer: str) -> dict[str, np.ndarray]:
    """A layer of the classifier (the head, or the backbone) as train saved it, by the name the .h5 file
    gives each weight (the backbone's "conv1_bn/gamma", the head's "head/predictions/kernel"), read
    without building the model."""
    with h5py.File(folder / "models/cifar10.h5", "r") as saved:
        group = saved[f"model_weights/{layer}"]
        return {name: group[name][()] for name in group.attrs["weight_names"]}


def saved_head_weights(folder: Path) -> list[np.ndarray]:
    return list(saved_weights(folder, "head").values())


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


def png_claiming(width: int, height: int) -> bytes:
    """A 1-bit grayscale PNG header claiming width x height, and a few bytes of data: the file is tiny."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    data = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class _TerabyteArray:
    """Pickles as numpy's own array reconstruction, asking for 10**12 bytes: 60 bytes of pickle."""

    def __reduce__(self):
        reconstruct = np.zeros(1).__reduce__()[0]
        return reconstruct, (np.ndarray, (10**12,), b"B")


def bad_archive(tmp_path: Path, case: str) -> Path:
    """A CIFAR-10 archive damaged or crafted as `case` says; "checksum" is a good one, not the official file."""
    archive, _ = fabricated_cifar(tmp_path / "cifar.tar.gz")
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    good = cifar_batch(np.zeros((20, 32, 32, 3), np.uint8), [1] * 20)
    if case == "truncated":
        archive.write_bytes(archive.read_bytes()[:300])
    elif case == "damaged deflate":  # the gzip header and first member intact, later compressed blocks noise
        data = bytearray(archive.read_bytes())
        data[len(data) // 20:len(data) // 20 + 1000] = np.random.default_rng(0).bytes(1000)
        archive.write_bytes(bytes(data))
        with pytest.raises(zlib.error), tarfile.open(archive) as tar:  # zlib's own error, not gzip's or tar's
            for member in tar:
                tar.extractfile(member).read() if member.isfile() else None
    elif case == "labels":
        bad = cifar_batch(np.zeros((20, 32, 32, 3), np.uint8), [11] * 20)
        write_tarball(archive, {f"cifar-10-batches-py/{name}": bad for name in names})
    elif case in ("not a dict", "array of a terabyte"):
        bad = pickle.dumps(np.zeros(3) if case == "not a dict" else {b"data": _TerabyteArray(), b"labels": []},
                           protocol=2)
        write_tarball(archive, {f"cifar-10-batches-py/{name}": bad if name == "data_batch_1" else good
                                for name in names})
    elif case == "member of 3 GB":  # GNU tar's sparse member: 3 GB of zeros in a few bytes
        hole = tmp_path / "sparse/cifar-10-batches-py/data_batch_1"
        hole.parent.mkdir(parents=True)
        with open(hole, "wb") as file:
            file.truncate(3 * 10**9)
        subprocess.run(["tar", "-S", "-czf", str(archive), "-C", str(tmp_path / "sparse"), "cifar-10-batches-py"],
                       check=True)
        hole.unlink()
    return archive

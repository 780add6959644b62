"""Hostile or broken input ends in one line and a non-zero exit; interrupted stages leave nothing half-written."""
import errno
import hashlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from stages import extract, paths, prepare, train
from stages.backbones import build_backbone
from stages.cli import run_stage
from stages.params import load_params
from tests.conftest import GIT_IDENTITY, REPO, cifar_batch, fabricated_cifar, run_module, write_params, write_tarball


def assert_one_line_error(result: subprocess.CompletedProcess, starts_with: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {starts_with}"), result.stderr


def bad_archive(tmp_path, case: str):
    archive, _ = fabricated_cifar(tmp_path / "cifar.tar.gz")
    if case == "truncated":
        archive.write_bytes(archive.read_bytes()[:300])
    elif case == "labels":
        images = np.zeros((20, 32, 32, 3), np.uint8)
        members = {f"cifar-10-batches-py/{name}": cifar_batch(images, [11] * 20)
                   for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                                "test_batch")}
        write_tarball(archive, members)
    return archive


@pytest.mark.parametrize("case, verify", [("truncated", False), ("checksum", True), ("labels", False)])
def test_bad_archives_fail_in_one_line(tmp_path, case, verify):
    archive = bad_archive(tmp_path, case)
    write_params(tmp_path, {"data": {"source": "cifar10", "archive": str(archive), "verify": verify,
                                     "val_size": 10, "limit": None}})
    assert_one_line_error(run_module("stages.prepare", tmp_path), "data.archive:")
    assert not (tmp_path / "data").exists()


def test_a_mismatched_weights_file_fails_in_one_line(workdir):
    prepare.run(load_params())
    weights = workdir / "vgg16.weights.h5"
    build_backbone("vgg16", "none", 32, seed=0).save_weights(weights)
    write_params(workdir, {"model": {"weights": str(weights)}})
    result = run_module("stages.extract", workdir)
    assert_one_line_error(result, f"model.weights: '{weights}' does not fit backbone 'densenet121'")
    assert not paths.FEATURES.exists() and not list(workdir.glob("data/*.partial"))


def digest(folder) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_a_killed_extract_reruns_to_identical_features(workdir):
    write_params(workdir, {"data": {"limit": 1500}})
    prepare.run(load_params())
    assert run_module("stages.extract", workdir).returncode == 0
    uninterrupted = digest(paths.FEATURES)

    env = {"PYTHONPATH": str(REPO), **GIT_IDENTITY, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-m", "stages.extract"], cwd=workdir, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial_train = workdir / "data/features.partial/train.npy"
    deadline = time.monotonic() + 120
    while not partial_train.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # a few batches in
    assert process.poll() is None, "extract finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (workdir / "data/features.partial").exists()
    assert digest(paths.FEATURES) == uninterrupted  # the complete output was never touched

    assert run_module("stages.extract", workdir).returncode == 0
    assert digest(paths.FEATURES) == uninterrupted
    assert not (workdir / "data/features.partial").exists()


def test_a_nan_loss_stops_training_and_keeps_no_model(workdir):
    params = load_params()
    prepare.run(params)
    extract.run(params)
    features = np.load(paths.features("train"))
    features[:5] = np.nan
    np.save(paths.features("train"), features)
    with pytest.raises(ValueError, match=r"train: the loss became nan at epoch 1; lower train.learning_rate"):
        train.run(params)
    assert not paths.INFERENCE_MODEL.exists() and not paths.LEGACY_MODEL.exists()


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device", "data/prepared.partial/train_images.npy"),
    PermissionError(errno.EROFS, "Read-only file system", "models/.cifar10.partial.keras"),
])
def test_file_system_failures_are_reported_as_such(workdir, capsys, error):
    def failing_stage(params):
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_stage(failing_stage)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: {error}\n"
    assert error.strerror in str(error)

"""Hostile or broken input ends in one line and a non-zero exit; interrupted stages leave nothing half-written."""
import errno
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from stages import evaluate, extract, train

from stages.lib import atomic, figures, fitting, paths
from stages.lib.models import build_backbone
from stages.lib.params import load_params
from tests.helpers import GIT_IDENTITY, REPO, bad_archive, run_module, write_params


def assert_one_line_error(result: subprocess.CompletedProcess, starts_with: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {starts_with}"), result.stderr


@pytest.mark.parametrize("case, verify", [("truncated", False), ("checksum", True), ("labels", False),
                                          ("damaged deflate", False), ("not a dict", False),
                                          ("array of a terabyte", False), ("member of 3 GB", False)])
def test_bad_archives_fail_in_one_line(tmp_path, case, verify):
    archive = bad_archive(tmp_path, case)
    write_params(tmp_path, {"data": {"source": "cifar10", "archive": str(archive), "verify": verify,
                                     "val_size": 10, "limit": None}})
    assert_one_line_error(run_module("stages.prepare", tmp_path), "data.archive:")
    assert not (tmp_path / "data").exists()


def test_a_mismatched_weights_file_fails_in_one_line(extracted, capsys):
    weights = extracted / "weights" / "vgg16.weights.h5"
    build_backbone("vgg16", "none", 32, seed=0).save_weights(weights)
    write_params(extracted, {"model": {"weights": str(weights)}})
    before = digest(paths.FEATURES)
    with pytest.raises(SystemExit) as exit_:
        extract.main()  # as `python -m stages.extract` runs it
    error = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in error, error
    assert error.strip().splitlines()[-1].startswith(f"error: model.weights: '{weights}' does not fit backbone "
                                                     f"'densenet121'"), error
    assert digest(paths.FEATURES) == before and not list(extracted.glob("data/*.partial"))


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(workdir):
    def small_file_limit():  # the kernel refuses writes past 64 KiB, as a full disk would
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    env = {"PYTHONPATH": str(REPO), **GIT_IDENTITY, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=300, preexec_fn=small_file_limit)
    assert_one_line_error(result, "[Errno 27] File too large: 'data/prepared'; free some space")
    assert not (workdir / "data").exists() or not [p for p in (workdir / "data").iterdir() if p.suffix != ".lock"]


def files_in(folder) -> dict:
    """Every file's bytes, the locks that stages hold while they write left out."""
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and path.suffix != ".lock"}


@pytest.mark.parametrize("failure", [pytest.param("writing the .h5", marks=pytest.mark.slow),
                                     pytest.param("no room for the .h5", marks=pytest.mark.slow),
                                     "writing the metrics"])
def test_a_full_disk_while_saving_keeps_the_last_runs_files_whole(evaluated, monkeypatch, capsys, failure):
    stage, folder = (evaluate, paths.METRICS) if failure == "writing the metrics" else (train, paths.MODELS)
    # Files the stage would not write itself (it writes the same bytes for the same params), so a rename shows.
    marked = paths.METRICS_FILE if stage is evaluate else paths.INFERENCE_MODEL
    marked.write_bytes(marked.read_bytes() + b"\n")
    write_params(evaluated, {"train": {"epochs": 1}})  # how it saves is under test, not how it fits
    kept = files_in(folder)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if failure == "writing the .h5":
        saving = keras.Model.save
        monkeypatch.setattr(keras.Model, "save", lambda model, path, *args, **kwargs: (_ for _ in ()).throw(full)
                            if str(path).endswith(".h5") else saving(model, path, *args, **kwargs))
    elif failure == "no room for the .h5":  # HDF5 may crash instead of failing: it must not get that far
        monkeypatch.setattr(atomic.shutil, "disk_usage", lambda folder: shutil._ntuple_diskusage(10**9, 10**9, 10))
    else:
        monkeypatch.setattr(figures.plt.Figure, "savefig", lambda *args, **kwargs: (_ for _ in ()).throw(full))
    with pytest.raises(SystemExit) as exit_:
        stage.main()
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("error: [Errno 28] No space left on device: ") and "free some space" in error[-1]
    assert files_in(folder) == kept


@pytest.mark.parametrize("stage, removed, missing", [
    (extract, paths.PREPARED, paths.PREPARED_INFO), (train, paths.FEATURES, paths.FEATURES_INFO),
    (evaluate, None, paths.INFERENCE_MODEL)], ids=["extract", "train", "evaluate"])
def test_a_stage_run_before_its_inputs_exist_names_the_missing_file_and_dvc_repro(extracted, capsys, stage, removed,
                                                                                     missing):
    if removed:
        shutil.rmtree(removed)
    kept = files_in(extracted)
    with pytest.raises(SystemExit) as exit_:
        stage.main()
    assert exit_.value.code == 1
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.strip().splitlines()[-1] == (
        f"error: no {missing}; run `dvc repro` first: it runs the stages before this one"), error
    assert files_in(extracted) == kept


ENDS_A_STAGE = """
import atexit, sys
from pathlib import Path
from stages.lib.fast_exit import end_process
atexit.register(lambda: Path("handler-ran").write_text("yes"))
print("buffered line")
sys.stderr.write("unflushed error text")
end_process()
raise SystemExit("end_process returned")
"""


def test_a_stage_ends_with_its_output_flushed_and_its_exit_handlers_run(tmp_path):
    """Stages skip the interpreter's teardown (TensorFlow's takes a second or more): nothing else may be lost."""
    ended = subprocess.run([sys.executable, "-c", ENDS_A_STAGE], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, "buffered line\n", "unflushed error text")
    assert (tmp_path / "handler-ran").read_text() == "yes"


def test_keras_writes_only_under_the_home_folder_it_is_given(tmp_path):
    """Unset, Keras would fall back to the system's temporary folder where the home folder is not writable."""
    home = tmp_path / "home-not-there-yet"  # not writable as far as Keras's os.access check can tell
    script = "import stages, keras; from keras.src.backend.config import keras_home; print(keras_home())"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(home / ".keras")


def digest(folder) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


# extract, stopped after its first batch: a file says so, then it waits to be killed.
EXTRACT_UNTIL_KILLED = """
import sys, time
from pathlib import Path
from stages import extract
from stages.lib import features
original = features.compile_engine
def engine_that_stops(*args):
    run_batch = original(*args)
    def first_batch_then_wait(batch):
        result = run_batch(batch)
        Path(sys.argv[1]).touch()
        time.sleep(600)
    return first_batch_then_wait
features.compile_engine = engine_that_stops
extract.main()
"""


@pytest.mark.slow
def test_a_killed_extract_keeps_the_old_features_and_reruns_to_the_same(extracted):
    uninterrupted = digest(paths.FEATURES)
    marker = extracted / "first-batch-done"
    env = {"PYTHONPATH": str(REPO), **GIT_IDENTITY, "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen([sys.executable, "-c", EXTRACT_UNTIL_KILLED, str(marker)], cwd=extracted, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "extract never finished a batch"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (extracted / f"data/features.{process.pid}.partial/train.npy").exists()
    assert digest(paths.FEATURES) == uninterrupted  # the complete output was never touched

    extract.run(load_params())
    assert digest(paths.FEATURES) == uninterrupted
    assert not list(extracted.glob("data/*partial"))  # the killed run's partial output is cleaned up


def poison_features(split: str, rows: slice) -> None:
    features = np.load(paths.features(split))
    features[rows] = np.nan
    np.save(paths.features(split), features)


@pytest.mark.parametrize("determinism_left_on", [False, True])
def test_non_finite_features_are_refused_before_training(extracted, determinism_left_on):
    # Whatever an earlier caller left behind (op determinism forces the non-XLA kernels), the answer is the same.
    if determinism_left_on:
        tf.config.experimental.enable_op_determinism()
    poison_features("train", slice(5, 10))
    with pytest.raises(ValueError, match=r"data/features/train.npy: row 5 holds non-finite values"):
        train.run(load_params())
    assert not paths.INFERENCE_MODEL.exists() and not paths.LEGACY_MODEL.exists()


@pytest.mark.parametrize("kernels", [pytest.param("xla", marks=pytest.mark.slow), "deterministic"])
def test_a_diverging_head_keeps_no_model(extracted, monkeypatch, kernels):
    if kernels == "deterministic":  # the kernels of a GPU, of fine-tuning and of training on images
        monkeypatch.setattr(train, "make_reproducible",
                            lambda head_alone: tf.config.experimental.enable_op_determinism())
    write_params(extracted, {"train": {"epochs": 2, "learning_rate": 1e30}})
    with pytest.raises(ValueError, match=r"^train: .*lower train.learning_rate \(now 1e\+30\)"):
        train.run(load_params())
    assert not paths.INFERENCE_MODEL.exists() and not paths.LEGACY_MODEL.exists()


def interrupt_after_one_epoch(monkeypatch) -> None:
    """Ctrl-C once dvclive has logged an epoch: the moment a SIGINT becomes a KeyboardInterrupt in Python."""
    log_epoch = fitting.LiveEpochs.on_epoch_end

    def logged_then_interrupted(self, epoch, logs=None):
        log_epoch(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(fitting.LiveEpochs, "on_epoch_end", logged_then_interrupted)


@pytest.mark.slow
@pytest.mark.parametrize("ending, status, last_line", [
    ("diverged", 1, "error: train: the loss became nan at epoch 1; lower train.learning_rate (now 1e+30)"),
    ("interrupted", 130, "error: interrupted; no output is left half-written: run it again to finish")])
def test_a_train_that_stops_leaves_the_last_runs_model_and_curves(evaluated, monkeypatch, capsys, ending, status,
                                                                   last_line):
    kept = files_in(evaluated / "models") | files_in(evaluated / "metrics")
    if ending == "diverged":
        write_params(evaluated, {"train": {"learning_rate": 1e30}})
    else:
        interrupt_after_one_epoch(monkeypatch)
    with pytest.raises(BaseException) as stopped:  # a KeyboardInterrupt that got through would end the session
        train.main()
    assert stopped.type is SystemExit and stopped.value.code == status, stopped.value
    error = capsys.readouterr().err
    assert "Traceback" not in error and error.strip().splitlines()[-1].startswith(last_line), error
    assert files_in(evaluated / "models") | files_in(evaluated / "metrics") == kept
    assert not [path for path in evaluated.rglob("*") if "partial" in path.name]


@pytest.mark.slow
def test_weights_that_make_non_finite_features_stop_extract(extracted):
    weights = extracted / "weights" / "broken.weights.h5"
    backbone = build_backbone("densenet121", "none", 32, seed=0)
    last_normalisation = backbone.get_layer("bn")  # before the last ReLU, which would turn a NaN into 0
    gamma, beta, mean, variance = last_normalisation.get_weights()
    last_normalisation.set_weights([gamma, np.full_like(beta, np.inf), mean, variance])
    backbone.save_weights(weights)
    write_params(extracted, {"model": {"weights": str(weights)}})
    before = digest(paths.FEATURES)
    with pytest.raises(ValueError, match="^extract: the backbone gave non-finite features for train image 0;"):
        extract.run(load_params())  # a ValueError: the command prints it in one line, as every stage's
    assert digest(paths.FEATURES) == before and not list(extracted.glob("data/*.partial"))

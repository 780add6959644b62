"""Beyond one machine: a shared DVC remote, queued experiments, and training on several devices."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from stages.lib.strategy import choose_strategy, cluster_workers
from tests.helpers import (CLEARLY_ABOVE_CHANCE, GIT_IDENTITY, REPO, dvc, dvc_env,
                            run_module, run_python, saved_head_weights)

OUTPUTS = ["data/prepared/train_images.npy", "data/features/train.npy", "models/cifar10.keras",
           "models/cifar10.h5", "metrics/metrics.json"]


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def git(repo, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_IDENTITY})


def commit_and_push(repo, remote) -> None:
    """The README's way to share results: a DVC remote, the results committed, their data pushed."""
    dvc(repo, "remote", "add", "--default", "shared", str(remote))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "results")
    dvc(repo, "push")


@pytest.mark.slow
def test_pushed_results_pull_where_only_prepare_reruns_and_a_registered_model_is_fetched(reproduced_repo, tmp_path):
    commit_and_push(reproduced_repo, tmp_path / "remote")
    # A DVC remote keeps each file under files/md5/<first two hex digits>/<the rest>.
    pushed = {f"{path.parent.name}{path.name}" for path in (tmp_path / "remote").rglob("*") if path.is_file()}
    assert md5_of(reproduced_repo / OUTPUTS[0]) not in pushed  # the cached images stay behind
    assert {md5_of(reproduced_repo / output) for output in OUTPUTS[1:4]} <= pushed  # features and models go

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(reproduced_repo), str(clone))
    dvc(clone, "pull", "--allow-missing")  # the README's command: the prepared images are not on the remote
    assert not (clone / "data/prepared").exists()
    for output in OUTPUTS[1:]:
        assert (clone / output).read_bytes() == (reproduced_repo / output).read_bytes(), output
    rerun = dvc(clone, "repro")
    assert "Running stage 'prepare'" in rerun and "Running stage 'extract'" not in rerun, rerun
    assert "Running stage 'train'" not in rerun and "Running stage 'evaluate'" not in rerun, rerun
    assert (clone / OUTPUTS[0]).read_bytes() == (reproduced_repo / OUTPUTS[0]).read_bytes()
    assert json.loads(dvc(clone, "status", "--json")) == {}
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout
    assert changed == "", changed  # dvc.lock as committed: prepare made the recorded hash

    # The model registry: a version tagged in the repository, fetched from it and the remote without a clone.
    git(reproduced_repo, "tag", "-a", "cifar10-classifier@v1.0.0", "-m", "densenet121 on tiny synthetic data")
    fetched = tmp_path / "elsewhere"
    fetched.mkdir()
    dvc(fetched, "artifacts", "get", str(reproduced_repo), "cifar10-classifier")  # the README's command
    # The registered file itself, byte for byte: the model that evaluate checked and measured.
    assert md5_of(fetched / "models/cifar10.keras") == md5_of(reproduced_repo / "models/cifar10.keras")
    assert json.loads((fetched / "models/cifar10.classes.json").read_text())[0] == "pattern_0"
    # In a process of its own: reading artifacts closes the sys.stderr that pytest captures without xdist.
    read = run_python(reproduced_repo, "import json; from dvc.repo import Repo; "
                                       "entry = Repo('.').artifacts.read()['dvc.yaml']['cifar10-classifier']; "
                                       "print(json.dumps([entry.type, entry.meta]))")
    assert read.returncode == 0, read.stderr
    kind, meta = json.loads(read.stdout)
    assert kind == "model" and meta["backbone"] == "densenet121" and meta["image_size"] == 32


def experiment_results(repo) -> dict[str, tuple[str, dict]]:
    """Experiment name -> its model.backbone and test metrics, from `dvc exp show --json`."""
    rows = json.loads(dvc(repo, "exp", "show", "--json"))
    return {rev["name"]: (rev["data"]["params"]["params.yaml"]["data"]["model"]["backbone"],
                          rev["data"]["metrics"]["metrics/metrics.json"]["data"])
            for row in rows for experiment in row.get("experiments") or [] for rev in experiment["revs"]}


def queue_finished(repo) -> bool:
    status = dvc(repo, "queue", "status")
    return not any(state in status for state in ("Queued", "Running"))


def experiments_ended(repo, count: int) -> bool:
    """Whether `count` queued experiments have ended, read from git's refs: an experiment that succeeds
    leaves refs/exps/<baseline>/<name>, one that fails DVC's failed stash. Cheaper to watch than `dvc queue
    status`, each call of which takes a second of CPU from the experiments running beside it."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.split()
    finished = [ref for ref in refs if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+", ref)]
    return len(finished) >= count or "refs/exps/celery/failed" in refs


def start_workers(repo, jobs: int) -> None:
    """`dvc queue start`, its output in a file: the workers it starts outlive it, and would hold a
    captured pipe open until the last of them exits (one that hangs on shutdown, for good)."""
    log = repo.parent / "queue-start.log"
    with open(log, "w") as output:
        started = subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=repo, env=dvc_env(),
                                 stdout=output, stderr=subprocess.STDOUT, timeout=300)
    assert started.returncode == 0, log.read_text()


def run_queued_sweep(repo) -> None:
    """The README's sweep, in one line, two at a time, until every experiment has ended."""
    dvc(repo, "exp", "run", "--queue", "-S", "model.backbone=densenet121,resnet50")
    start_workers(repo, jobs=2)
    deadline = time.monotonic() + 900
    while not experiments_ended(repo, 2) and time.monotonic() < deadline:
        time.sleep(1)
    while not queue_finished(repo) and time.monotonic() < deadline:  # the workers' last word
        time.sleep(1)
    status = dvc(repo, "queue", "status")
    assert queue_finished(repo) and "Failed" not in status, status


def check_comparison(repo, names: list[str], metrics: dict[str, dict]) -> None:
    """The README's comparison of the sweep: its table, its chart and `dvc plots diff` of the two."""
    compared = run_module("stages.compare", repo)
    assert compared.returncode == 0, compared.stderr
    rows = [line.split("|")[1:-1] for line in compared.stdout.splitlines() if line.startswith("| ")][1:]
    experiments = {row[1].strip(): row[0].strip() for row in rows}
    assert len(rows) == 3 and set(names) < set(experiments), compared.stdout  # the baseline and the two
    assert sorted(experiments.values()) == ["densenet121", "densenet121", "resnet50"], compared.stdout
    for row in rows:
        accuracy, low, high = map(float, row[2].replace("(", "").replace(")", "").replace("–", " ").split())
        assert accuracy == pytest.approx(metrics[row[0].strip()]["accuracy"], abs=1e-3), row
        assert low < accuracy < high and high - low < 0.2, row
        assert float(row[4]) > 0 and float(row[7]) > 1, row  # extraction images/s, model MB
    with Image.open(repo / "metrics/compare.png") as chart:
        assert np.asarray(chart.convert("L")).std() > 20, "the chart is blank"
    charts = json.loads(dvc(repo, "plots", "diff", *names, "--json"))["data"]  # the two side by side
    for chart in ("loss", "accuracy", "confusion", "per_class_f1"):
        assert {row["rev"] for row in charts[chart][0]["content"]["data"]["values"]} == set(names), chart


@pytest.mark.slow
def test_a_sweep_queued_two_at_a_time_is_pulled_and_applied_on_another_machine(reproduced_repo, tmp_path):
    """The README's sweep from a committed baseline, then shared: two experiments run at once without clashing;
    the densenet121 one, the baseline's params, gets the baseline's outputs back from DVC's run cache in its own
    workspace, and with them its metrics exactly; `dvc exp push` takes both to a machine that has only a clone."""
    shared_git = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(shared_git))
    git(reproduced_repo, "remote", "add", "origin", str(shared_git))
    commit_and_push(reproduced_repo, tmp_path / "remote")
    git(reproduced_repo, "push", "-q", "origin", "HEAD:main")
    git(shared_git, "symbolic-ref", "HEAD", "refs/heads/main")
    baseline = json.loads((reproduced_repo / "metrics/metrics.json").read_text())

    run_queued_sweep(reproduced_repo)
    results = experiment_results(reproduced_repo)
    names, metrics = list(results), {backbone: run for backbone, run in results.values()}
    assert set(metrics) == {"densenet121", "resnet50"}, results
    assert metrics["densenet121"] == baseline  # the same params in another workspace: the same numbers
    assert all(run["accuracy"] > CLEARLY_ABOVE_CHANCE for run in metrics.values()), metrics
    untracked = subprocess.run(["git", "status", "--porcelain"], cwd=reproduced_repo, capture_output=True, text=True)
    assert untracked.stdout == "", untracked.stdout
    check_comparison(reproduced_repo, names, metrics)
    for name in names:
        dvc(reproduced_repo, "exp", "push", "origin", name)  # the README's "a machine's share"

    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(shared_git), str(other))
    dvc(other, "pull", "--allow-missing")
    dvc(other, "repro")  # prepare rebuilds the images, never pushed, into this machine's cache
    dvc(other, "exp", "pull", "origin")
    assert experiment_results(other) == results
    resnet50 = next(name for name, (backbone, _) in results.items() if backbone == "resnet50")
    dvc(other, "exp", "apply", resnet50)
    dvc(other, "pull")
    with zipfile.ZipFile(other / "models/cifar10.keras") as saved:  # the model's config, not its 96 MB of weights
        assert json.loads(saved.read("config.json"))["config"]["name"] == "resnet50_classifier"


def test_the_strategy_is_one_device_unless_there_are_several_gpus():
    import tensorflow as tf

    assert choose_strategy(gpus=[], tf_config="") is tf.distribute.get_strategy()
    assert choose_strategy(gpus=["/device:GPU:0"], tf_config="") is tf.distribute.get_strategy()
    assert cluster_workers('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}') == 2
    with pytest.raises(ValueError, match="keras-team/keras#20585"):
        choose_strategy(gpus=[], tf_config='{"cluster": {"chief": ["a:1"], "worker": ["b:2"]}}')
    with pytest.raises(ValueError, match="TF_CONFIG is not a JSON object"):
        cluster_workers("worker=a:1")


MIRRORED_TRAINING = """
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from stages import train
from stages.lib import strategy
cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
mirrored = strategy.choose_strategy(gpus=cpus)  # two CPUs stand in for two GPUs
print("replicas", mirrored.num_replicas_in_sync)
train.choose_strategy = lambda: mirrored
train.main()
"""


@pytest.mark.slow
def test_mirrored_training_over_two_devices_matches_one_device(evaluated):
    single = saved_head_weights(evaluated)  # the shared run's train, on one device
    assert [weights.shape for weights in single] == [(1024, 256), (256,), (256, 10), (10,)]
    mirrored = subprocess.run([sys.executable, "-c", MIRRORED_TRAINING], cwd=evaluated, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert mirrored.returncode == 0, mirrored.stderr
    assert "replicas 2" in mirrored.stdout
    for one_device, two_devices in zip(single, saved_head_weights(evaluated)):
        assert np.abs(one_device - two_devices).max() < 1e-4

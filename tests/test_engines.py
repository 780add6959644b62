"""Extraction engines agree with TensorFlow, and sharded extraction merges to the same bytes as one process."""
import os
import subprocess
import sys

import numpy as np

from stages import extract, paths, prepare
from tests.conftest import GIT_IDENTITY, REPO, run_module, run_stages, write_params


def extracted_features() -> dict:
    return {split: np.load(paths.features(split)) for split in paths.SPLITS}


def test_xla_and_openvino_features_match_tensorflow(workdir):
    small = {"data": {"limit": 60, "val_size": 10}}
    write_params(workdir, small)
    run_stages(prepare)
    features = {}
    for engine in ("tensorflow", "xla", "openvino"):
        write_params(workdir, {**small, "extract": {"engine": engine}})
        run_stages(extract)
        features[engine] = extracted_features()["train"]
    reference = features.pop("tensorflow")
    for engine, values in features.items():
        relative = np.abs(values - reference).max() / np.abs(reference).max()
        assert relative < 1e-4, (engine, relative)


def test_two_shard_processes_merge_to_the_bytes_of_one(workdir):
    write_params(workdir, {"data": {"limit": 100, "val_size": 10}, "extract": {"batch_size": 16}})
    run_stages(prepare, extract)
    single = {split: paths.features(split).read_bytes() for split in paths.SPLITS}
    env = {**os.environ, "PYTHONPATH": str(REPO), **GIT_IDENTITY}
    workers = [subprocess.Popen([sys.executable, "-m", "stages.extract", "--shard", f"{index}/2"], cwd=workdir,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for index in range(2)]
    for worker in workers:
        assert worker.wait(timeout=600) == 0, worker.stderr.read()
    merged = run_module("stages.extract", workdir, "--merge", "2")
    assert merged.returncode == 0, merged.stderr
    assert {split: paths.features(split).read_bytes() for split in paths.SPLITS} == single


def test_merging_shards_of_other_params_fails_in_one_line(workdir):
    write_params(workdir, {"data": {"limit": 40, "val_size": 10}})
    run_stages(prepare)
    assert run_module("stages.extract", workdir, "--shard", "0/2").returncode == 0
    missing = run_module("stages.extract", workdir, "--merge", "2")
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith("error: shard 1 of 2 is missing"), missing.stderr
    write_params(workdir, {"data": {"limit": 40, "val_size": 10}, "model": {"seed": 7}})
    assert run_module("stages.extract", workdir, "--shard", "1/2").returncode == 0
    stale = run_module("stages.extract", workdir, "--merge", "2")
    assert stale.returncode == 1 and "extracted with other seed" in stale.stderr, stale.stderr

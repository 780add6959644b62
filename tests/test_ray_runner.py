"""Ray Data as extract's and prepare's runner (RAY_ADDRESS set): the in-process run's bytes on two nodes, after a
killed actor and with the driver's thread count, DVC seeing nothing to rerun, and what it refuses, in one line."""
import json
import os
import time

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from stages import prepare
from stages.lib import paths
from stages.lib.ray_cluster import SHARED_VARIABLE, require_answer
from stages.lib.ray_extract import EXIT_VARIABLE, checked
from stages.lib.ray_reads import cache_mark, readable_cache
from stages.lib.runners import ADDRESS_VARIABLE
from tests.helpers import dvc, run_module, run_stages, write_params
from tests.test_own_images import write_dataset

pytestmark = pytest.mark.slow
TWO_NODES = pytest.mark.xdist_group("ray")  # one worker starts the cluster, once


@pytest.fixture(scope="module")
def two_nodes():
    """Two Ray nodes of one CPU each, on one core of this machine: their workers' TensorFlow takes one thread by
    default while the driver's takes every core, so the bytes agree only if the actors pin the driver's."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
    finally:
        os.sched_setaffinity(0, cores)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()


def output_bytes(root) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


@TWO_NODES
def test_extract_joining_two_nodes_after_a_killed_actor_leaves_dvc_nothing_to_rerun(reproduced_repo, two_nodes):
    """`python -m stages.extract` joins the cluster at its address, and one actor exits after its first batch, as if
    killed: the actors compute with the driver's thread count, not their one core's, so the features are the shared
    run's to the byte and DVC sees nothing to rerun."""
    marker = reproduced_repo / "actor-exited"
    result = run_module("stages.extract", reproduced_repo, env={ADDRESS_VARIABLE: two_nodes,
                                                                EXIT_VARIABLE: str(marker)})
    assert result.returncode == 0, result.stderr
    timing = json.loads((reproduced_repo / paths.EXTRACT_TIMING).read_text())["extract"]
    assert (timing["runner"], timing["actors"], timing["nodes"]) == ("ray", 2, 2)  # both nodes computed batches
    assert timing["devices"][0].startswith("CPU with")
    assert marker.exists()  # an actor did exit, and Ray gave its batch to a new one
    changed = dvc(reproduced_repo, "status", "--json")  # the timing metrics change, as in any run
    assert str(paths.FEATURES) not in changed and str(paths.PREPARED) not in changed, changed


@TWO_NODES
def test_prepare_on_ray_caches_a_folder_dataset_byte_for_byte(workdir, two_nodes, monkeypatch):
    write_dataset(workdir / "images", np.random.default_rng(1), {"train": 16, "test": 4})  # 42 train: 2 chunks
    write_params(workdir, {"data": {"source": "folder", "path": "images", "val_size": 6, "limit": None}})
    run_stages(prepare)
    in_process = output_bytes(paths.PREPARED)
    monkeypatch.setenv(ADDRESS_VARIABLE, two_nodes)
    run_stages(prepare)
    assert output_bytes(paths.PREPARED) == in_process


def test_a_node_that_cannot_read_the_drivers_cache_or_reads_another_is_refused(small):
    root = str((small / paths.PREPARED).resolve())
    with pytest.raises(FileNotFoundError, match=f"^a Ray node cannot read data/prepared at {root}x "):
        readable_cache(root + "x", cache_mark(paths.PREPARED))
    with pytest.raises(ValueError, match=f"^a Ray node reads another data/prepared at {root} than the driver's; "
                                         f"mount it at that path on every node, or unset {SHARED_VARIABLE}"):
        readable_cache(root, "another")
    assert len(readable_cache(root, cache_mark(paths.PREPARED))) == 80


def test_actors_on_two_kinds_of_device_are_refused():
    recipe = json.dumps({"engine": "tensorflow"})
    rows = [{"start": start, "features": np.zeros((2, 3), np.float32), "recipe": recipe, "device": device,
             "node": "n"} for start, device in ((0, "CPU with avx2"), (2, "GPU NVIDIA H100"))]
    batches = checked(iter(rows), {})
    assert next(batches)[0] == 0
    with pytest.raises(ValueError, match=r"^extract: Ray's actors ran on different devices or engines \(CPU with "
                                         r"avx2 \(tensorflow\); GPU NVIDIA H100 \(tensorflow\)\), whose features"):
        next(batches)


def test_a_ray_address_where_nothing_listens_fails_in_one_line_within_seconds(small):
    started = time.monotonic()
    result = run_module("stages.extract", small, timeout=60, env={ADDRESS_VARIABLE: "ray://127.0.0.1:1"})
    assert time.monotonic() - started < 30  # Ray's client alone would wait 30 s
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: RAY_ADDRESS='ray://127.0.0.1:1': no Ray head answers there ([Errno 111] Connection refused); start "
        "the cluster (ray start --head) or unset RAY_ADDRESS to run in this process"], result.stderr


def test_auto_and_local_are_left_to_ray():
    for address in ("auto", "local"):  # Ray's own words, for the cluster of this machine or one started for the run
        require_answer(address)  # probed as host names, they would fail

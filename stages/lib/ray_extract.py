"""extract on Ray Data: a pool of actors, each building the engine once, computes whole batches with the
in-process run's padding, and this process (the driver) writes them in order with the in-process writer
(features.py): the same bytes, whichever runner.

The weights are read here once and shipped: no node downloads them or needs the file. The batches are read from
data/prepared where reads_placed() says (ray_cluster.py); a node that reads another cache, or none, is refused.
"""
import dataclasses
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from ray.data import ActorPoolStrategy, TaskPoolStrategy

from stages.lib import paths
from stages.lib.engines import device, share_threads
from stages.lib.features import batch_starts, build_engine, engine_batch_size, prepared_images, write_rows
from stages.lib.frameworks import BACKEND
from stages.lib.models import build_backbone
from stages.lib.params import ModelParams, Params
from stages.lib.quoting import shown
from stages.lib.ray_cluster import connect, reads_placed, task_errors
from stages.lib.ray_reads import cache_mark, read_batches

EXIT_VARIABLE = "PIPELINE_TEST_ACTOR_EXIT"  # tests only: a marker file; the actor that makes it exits, as if killed


def extract_on_ray(params: Params, image_size: int, out: Path, timing: dict) -> dict:
    """extract_splits' work on Ray: features into `out`, seconds and the fleet into `timing`; returns the recipe.
    One actor per GPU, or per CPU where the cluster has none."""
    startup_seconds = connect()
    images = prepared_images()
    batch_size = engine_batch_size(params.extract.batch_size, len(images))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    actors = min(gpus or int(ray.cluster_resources()["CPU"]), -(-len(images) // batch_size))
    started, fleet = time.perf_counter(), {}
    with task_errors():
        rows = iter(computed_batches(params, image_size, batch_size, len(images), actors, gpus).iter_rows())
        first = next(rows)
        first_seconds = time.perf_counter() - started
        width = first["features"].shape[1]
        write_rows(checked(itertools.chain([first], rows), fleet), width, images, batch_size, out)
    seconds = time.perf_counter() - started
    (recipe, fleet_device), = fleet
    timing |= {"runner": "ray", "engine": json.loads(recipe)["engine"], "actors": actors, "devices": [fleet_device],
               "nodes": len(fleet[recipe, fleet_device]),
               "images": len(images), "startup_seconds": startup_seconds, "first_batch_seconds": first_seconds,
               "seconds": seconds, "images_per_second": (len(images) - batch_size) / (seconds - first_seconds)
               if len(images) > batch_size else 0.0}
    return json.loads(recipe)


def computed_batches(params: Params, image_size: int, batch_size: int, count: int, actors: int,
                     gpus: int) -> ray.data.Dataset:
    """Rows of (start, features, recipe, device, node), one per engine batch, in the batches' order."""
    reads = {"root": str(paths.PREPARED.resolve()), "batch_size": batch_size, "mark": cache_mark(paths.PREPARED)}
    engines = {"params": params, "image_size": image_size, "weights": shipped_weights(params.model, image_size),
               "threads": len(os.sched_getaffinity(0)), "exit_marker": os.environ.get(EXIT_VARIABLE)}
    return ray.data.from_items([{"start": start} for start in batch_starts(count, batch_size)]).map_batches(
        read_batches, batch_size=1, num_cpus=0, compute=TaskPoolStrategy(size=actors), fn_kwargs=reads,
        **reads_placed(),
    ).map_batches(EngineActor, batch_size=1, compute=ActorPoolStrategy(size=actors), num_cpus=0 if gpus else 1,
                  num_gpus=1 if gpus else 0, fn_constructor_kwargs=engines,
                  runtime_env={"env_vars": {"KERAS_BACKEND": BACKEND}})  # the engine's, chosen before Keras loads


def checked(rows, fleet: dict):
    """(first row, features) of each computed batch; `fleet` gathers each (recipe, device)'s nodes. Actors on two
    kinds of device, or resolving `auto` to two engines, would compute different bytes: refused."""
    for row in rows:
        fleet.setdefault((str(row["recipe"]), str(row["device"])), set()).add(str(row["node"]))
        if len(fleet) > 1:
            kinds = "; ".join(f"{device} ({json.loads(recipe)['engine']})" for recipe, device in fleet)
            raise ValueError(f"extract: Ray's actors ran on different devices or engines ({shown(kinds, False)}), "
                             f"whose features differ; run on one kind of node, or name extract.engine")
        yield int(row["start"]), row["features"]


def shipped_weights(model: ModelParams, image_size: int):
    """The weights file's name and bytes, read here once, in Ray's object store; None for random weights,
    which every actor draws alike from model.seed."""
    if model.weights == "none":
        return None
    if model.weights != "imagenet":
        return ray.put((Path(model.weights).name, Path(model.weights).read_bytes()))
    with tempfile.TemporaryDirectory(prefix="imagenet-") as folder:  # Keras's download, once, on this machine
        saved = Path(folder) / f"{model.backbone}.weights.h5"
        build_backbone(model.backbone, "imagenet", image_size, model.seed).save_weights(saved)
        return ray.put((saved.name, saved.read_bytes()))


class EngineActor:
    """One engine, built once per actor; each call computes whole batches."""

    def __init__(self, params: Params, image_size: int, weights, threads: int, exit_marker: str | None):
        share_threads(threads)  # the driver's, as in-process
        with tempfile.TemporaryDirectory(prefix="weights-") as folder:
            self.engine, _, recipe = build_engine(with_weights(params, weights, Path(folder)), image_size)
        self.recipe = json.dumps({**recipe, "weights": params.model.weights})
        self.device, self.node = device(), ray.get_runtime_context().get_node_id()
        self.exit_marker, self.calls = exit_marker, 0

    def __call__(self, batch: dict) -> dict:
        self.exit_after_first_batch()
        count = len(batch["start"])
        return {"start": batch["start"], "features": np.stack([self.engine(images) for images in batch["images"]]),
                "recipe": [self.recipe] * count, "device": [self.device] * count, "node": [self.node] * count}

    def exit_after_first_batch(self) -> None:
        self.calls += 1
        if self.exit_marker and self.calls == 2:
            try:
                os.close(os.open(self.exit_marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)


def with_weights(params: Params, weights, folder: Path) -> Params:
    """`params` reading the shipped weights from a file in `folder`."""
    if weights is None:
        return params
    name, data = ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights
    (folder / name).write_bytes(data)
    return dataclasses.replace(params, model=dataclasses.replace(params.model, weights=str(folder / name)))

"""Ray for the stages: joining the cluster RAY_ADDRESS names, where tasks read this machine's files, and Ray's
wrapped errors turned back into the task's own, for the one-line errors."""
import functools
import logging
import os
import socket
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from stages.lib.quoting import shown
from stages.lib.runners import ADDRESS_VARIABLE, ray_address

# 1: every node mounts the repository (data/prepared, a folder dataset) at this machine's path, and Ray's tasks
# read it where they run. Unset: they run on this machine's node, and Ray's object store carries what they read.
SHARED_VARIABLE = "PIPELINE_SHARED_FILES"
PROBE_SECONDS = 5  # a head that has not answered by then is not there; Ray's client alone would wait 30 s
CLIENT_PORT, GCS_PORT = 10001, 6379  # Ray's defaults for ray://head and head


def connect() -> float:
    """Join the cluster RAY_ADDRESS names (`local`: start one for this run); returns the seconds it took.
    A process already joined (a test's cluster) stays on its cluster."""
    started = time.perf_counter()
    if not ray.is_initialized():
        address = ray_address()
        require_answer(address)
        try:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as error:
            raise ConnectionError(f"{ADDRESS_VARIABLE}={shown(address)}: {shown(error)}; start the cluster "
                                  f"(ray start --head) or unset {ADDRESS_VARIABLE} to run in this process") from None
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the driver writes rows in the order they come
    context.enable_progress_bars = False  # the driver's own bar counts the rows written
    context.print_on_execution_start = False
    context.raise_original_map_exception = True  # the task's own error and message, not "UDF failed"
    for handler in logging.getLogger("ray.data").handlers:  # its log file keeps what the console no longer shows
        if isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith("ray."):  # not ours
            handler.setLevel(logging.CRITICAL)  # a failed task's traceback: the stage says it in one line
    return time.perf_counter() - started


def require_answer(address: str) -> None:
    """A head's port must answer within seconds: `auto` and `local` fail or start at once by themselves."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    default = CLIENT_PORT if parts.scheme == "ray" else GCS_PORT
    try:
        host, port = parts.hostname, parts.port or default
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except (OSError, ValueError) as error:
        raise ConnectionError(f"{ADDRESS_VARIABLE}={shown(address)}: no Ray head answers there ({shown(error)}); "
                              f"start the cluster (ray start --head) or unset {ADDRESS_VARIABLE} to run in this "
                              f"process") from None


def reads_placed() -> dict:
    """map_batches' arguments for the tasks that read this machine's files (see SHARED_VARIABLE). Through
    ray_remote_args_fn, which keeps Ray from fusing the reads into the next step and pinning that step too."""
    if os.environ.get(SHARED_VARIABLE) == "1":
        return {}
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return {"ray_remote_args_fn": functools.partial(dict, scheduling_strategy=here)}


@contextmanager
def task_errors():
    """A task's or actor's exception reaches the driver wrapped by Ray, with the remote traceback: raise the
    task's own, whose message says what was wrong and how to fix it."""
    try:
        yield
    except ray.exceptions.RayError as error:
        raise own_error(error) from None


def own_error(error: BaseException) -> BaseException:
    while isinstance(error, ray.exceptions.RayError):
        cause = getattr(error, "cause", None) or error.__cause__
        if cause is None:
            return ChildProcessError(f"Ray: {shown(error)}; the workers' logs are in /tmp/ray/session_latest/logs")
        error = cause
    return error

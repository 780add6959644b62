"""Which runner computes extract and prepare: this process, or Ray Data on the cluster that RAY_ADDRESS names.

The environment decides, as Ray's own tools do (`auto`, `ray://head:10001`, `head:6379`, or `local` for a Ray
started for this run), not params.yaml: either runner writes the same bytes, so DVC has nothing to rerun.
Ray is imported only when RAY_ADDRESS is set.
"""
import os

ADDRESS_VARIABLE = "RAY_ADDRESS"
IN_PROCESS = {"runner": "in-process", "actors": 0}  # what extract's timing records for this one


def ray_address() -> str | None:
    return os.environ.get(ADDRESS_VARIABLE) or None

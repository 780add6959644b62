"""The runs of this repository as `dvc exp show --json` lists them, each read into one Result, and grouped
into runs that may be compared: the same prepared data, and the same settings but the backbone's."""
import json
import logging
import math
import subprocess
import sys
from dataclasses import dataclass

from stages.lib import paths
from stages.lib.quoting import shown
from stages.lib.scores import accuracy_interval

log = logging.getLogger("compare")

# They change how fast a run is, not what it measures.
NOT_COMPARED = ("model.backbone", "extract.engine", "extract.batch_size")


@dataclass(frozen=True)
class Result:
    experiment: str
    backbone: str
    accuracy: float
    test_images: int | None
    macro_f1: float | None
    extract_images_per_second: float | None
    extract_seconds: float | None
    head_seconds: float | None
    model_bytes: int | None
    setting: tuple  # what two runs must share to be compared: every other param, and the prepared data

    @property
    def interval(self) -> tuple[float, float] | None:
        return accuracy_interval(self.accuracy, self.test_images) if self.test_images else None


def show_experiments() -> list[dict]:
    """`dvc exp show --json` of the repository in the current folder."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if shown.returncode:
        lines = [line for line in shown.stderr.splitlines() if line.strip()] or ["no output"]
        raise ValueError(f"`dvc exp show --json` failed: {lines[-1].strip()}")
    return json.loads(shown.stdout)


def runs(shown: list[dict]):
    """(name, data) of every commit and experiment; the uncommitted workspace is left out
    (`dvc exp save` makes it an experiment)."""
    for commit in shown:
        if commit["rev"] != "workspace":
            yield commit.get("name") or commit["rev"][:7], commit.get("data")
        for experiment in commit.get("experiments") or []:
            for rev in experiment["revs"]:
                yield rev.get("name") or rev["rev"][:7], rev.get("data")


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def number(value, low: float = 0.0, high: float = math.inf) -> float | None:
    """A figure as read from a metrics file anyone can edit: a number within its range, or None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    return float(value) if ok else None


def result_of(name: str, data: dict | None) -> Result | None:
    """One run's figures, or None for a run without a usable test accuracy (failed, not evaluated, or a
    metrics file edited into something else)."""
    metrics = {path: entry.get("data") or {} for path, entry in ((data or {}).get("metrics") or {}).items()}
    test = metrics.get(str(paths.METRICS_FILE), {})
    if "accuracy" not in test:
        return None
    if (accuracy := number(test["accuracy"], high=1.0)) is None:
        log.warning("skipping %s: its %s holds accuracy %s, not a number from 0 to 1", shown(name, quoted=False),
                    paths.METRICS_FILE, shown(test["accuracy"]))
        return None
    params = flatten(data["params"]["params.yaml"]["data"])
    extract = metrics.get(str(paths.EXTRACT_TIMING), {}).get("extract", {})
    train = metrics.get(str(paths.TRAIN_TIMING), {})
    outs = data.get("outs") or {}
    prepared = (outs.get(str(paths.PREPARED)) or {}).get("hash")
    setting = tuple(sorted((key, as_text(value)) for key, value in params.items() if key not in NOT_COMPARED))
    test_images = number(test.get("test_images"), low=1)
    return Result(
        experiment=shown(name, quoted=False), backbone=shown(str(params.get("model.backbone", "?")), quoted=False),
        accuracy=accuracy, test_images=int(test_images) if test_images else None,
        macro_f1=number(test.get("macro_f1"), high=1.0),
        extract_images_per_second=number(extract.get("images_per_second")) or None,
        extract_seconds=number(extract.get("seconds")) if extract.get("images") else None,
        head_seconds=number(train.get("head_seconds")),
        model_bytes=number((outs.get(str(paths.INFERENCE_MODEL)) or {}).get("size")),
        setting=(*setting, (str(paths.PREPARED), str(prepared)[:8])),
    )


def grouped(results: list[Result]) -> dict[str, list[Result]]:
    """Results that may be compared, under a heading naming what sets their group apart from the others."""
    groups: dict[tuple, list[Result]] = {}
    for result in results:
        groups.setdefault(result.setting, []).append(result)
    differing = {key for setting in groups for key, value in setting
                 if any(dict(other).get(key) != value for other in groups)}
    headings = {}
    for setting, members in groups.items():
        difference = ", ".join(f"{key}={value}" for key, value in setting if key in differing)
        headings[difference or "all runs share their data, image size and head"] = sorted(
            members, key=lambda result: -result.accuracy)
    return headings

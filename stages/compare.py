"""Compare the experiments of this repository side by side: a table and a chart, one row per run.

    dvc exp run --queue -S 'model.backbone=densenet121,vgg16,convnext_tiny' -S train.head=linear
    dvc queue start            # then wait until `dvc queue status` shows none queued or running
    python -m stages.compare   # writes metrics/compare.md and metrics/compare.png

Only runs on the same prepared data with the same settings share a table: runs that differ in anything
but the backbone and the speed knobs are shown apart, under a heading that names the difference.
"""
import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass

import matplotlib

from stages import paths
from stages.atomic import atomic_file
from stages.cli import one_line_errors

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

# They change how fast a run is, not what it measures.
NOT_COMPARED = ("model.backbone", "extract.engine", "extract.batch_size")
Z = 2  # the accuracy's interval: about 95 %


def accuracy_interval(accuracy: float, images: int) -> tuple[float, float]:
    """Wilson's score interval of an accuracy measured on `images` test images, at z = Z.

    Unlike accuracy ± Z standard errors, it stays within 0..1 and does not shrink to nothing at an accuracy
    of 0 or 1 (a small, easy test split), where the test split is least sure of it."""
    shrink = 1 + Z ** 2 / images
    centre = (accuracy + Z ** 2 / (2 * images)) / shrink
    half = Z / shrink * math.sqrt(accuracy * (1 - accuracy) / images + Z ** 2 / (4 * images ** 2))
    # It holds the accuracy itself, also after rounding (an error bar must not be negative).
    return max(0.0, min(accuracy, centre - half)), min(1.0, max(accuracy, centre + half))


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


def result_of(name: str, data: dict | None) -> Result | None:
    """One run's figures, or None for a run without test metrics (failed, or not evaluated)."""
    metrics = {path: entry.get("data") or {} for path, entry in ((data or {}).get("metrics") or {}).items()}
    test = metrics.get(str(paths.METRICS_FILE), {})
    if "accuracy" not in test:
        return None
    params = flatten(data["params"]["params.yaml"]["data"])
    extract = metrics.get(str(paths.EXTRACT_TIMING), {}).get("extract", {})
    train = metrics.get(str(paths.TRAIN_TIMING), {})
    outs = data.get("outs") or {}
    prepared = (outs.get(str(paths.PREPARED)) or {}).get("hash")
    setting = tuple(sorted((key, as_text(value)) for key, value in params.items() if key not in NOT_COMPARED))
    return Result(
        experiment=name, backbone=params.get("model.backbone", "?"), accuracy=test["accuracy"],
        test_images=test.get("test_images"), macro_f1=test.get("macro_f1"),
        extract_images_per_second=extract.get("images_per_second") or None,
        extract_seconds=extract.get("seconds") if extract.get("images") else None,
        head_seconds=train.get("head_seconds"),
        model_bytes=(outs.get(str(paths.INFERENCE_MODEL)) or {}).get("size"),
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


def number(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(groups: dict[str, list[Result]]) -> str:
    lines = []
    for heading, results in groups.items():
        lines += [f"## {heading}", "",
                  "| backbone | experiment | test accuracy (95 % interval) | macro F1 | extraction images/s "
                  "| extraction s | head training s | model MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for result in results:
            interval = f" ({result.interval[0]:.3f}–{result.interval[1]:.3f})" if result.interval else ""
            accuracy = number(result.accuracy, 3) + interval
            megabytes = None if result.model_bytes is None else result.model_bytes / 1e6
            lines.append(f"| {result.backbone} | {result.experiment} | {accuracy} | {number(result.macro_f1, 3)} "
                         f"| {number(result.extract_images_per_second, 1)} | {number(result.extract_seconds, 1)} "
                         f"| {number(result.head_seconds, 1)} | {number(megabytes, 1)} |")
        lines.append("")
    lines.append(f"The interval is Wilson's score interval at z = {Z} on the n test images; unlike ± {Z} standard "
                 "errors, it does not shrink to nothing at an accuracy of 0 or 1. Two backbones whose intervals "
                 "overlap are not told apart by this test split.")
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[Result]]) -> None:
    """Per group, test accuracy with its error bar, and extraction speed, one bar per run."""
    figure, axes = plt.subplots(len(groups), 2, figsize=(11, 1.2 + 0.5 * sum(map(len, groups.values()))),
                                squeeze=False, height_ratios=[len(results) + 1 for results in groups.values()])
    for (heading, results), (accuracy_axis, speed_axis) in zip(groups.items(), axes):
        labels = [f"{result.backbone} ({result.experiment})" for result in results]
        rows = range(len(results))
        intervals = [result.interval or (result.accuracy, result.accuracy) for result in results]
        below_and_above = [[result.accuracy - low for result, (low, _) in zip(results, intervals)],
                           [high - result.accuracy for result, (_, high) in zip(results, intervals)]]
        accuracy_axis.barh(rows, [result.accuracy for result in results], color="tab:blue",
                           xerr=below_and_above, capsize=4)
        accuracy_axis.set(yticks=rows, xlim=(0, 1), xlabel="test accuracy (95 % interval)", title=heading)
        accuracy_axis.set_yticklabels(labels)
        accuracy_axis.invert_yaxis()
        speed_axis.barh(rows, [result.extract_images_per_second or 0 for result in results], color="tab:orange")
        speed_axis.set(yticks=rows, yticklabels=[], xlabel="extraction images/s")
        speed_axis.invert_yaxis()
    figure.tight_layout()
    with atomic_file(paths.COMPARE_PNG) as partial:
        figure.savefig(partial, dpi=100)
    plt.close(figure)


def compare(shown: list[dict]) -> str:
    results = [result for name, data in runs(shown) if (result := result_of(name, data))]
    if not results:
        raise ValueError(f"no commit or experiment here has test metrics ({paths.METRICS_FILE}); run some first, "
                         f"e.g. `dvc exp run --queue -S 'model.backbone=densenet121,vgg16'` and `dvc queue start`")
    groups = grouped(results)
    table = markdown(groups)
    with atomic_file(paths.COMPARE_TABLE) as partial:
        partial.write_text(table)
    plot(groups)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with one_line_errors():
        print(compare(show_experiments()), end="")


if __name__ == "__main__":
    main()

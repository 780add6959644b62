"""Compare the experiments of this repository side by side: a table and a chart, one row per run.

    dvc exp run --queue -S 'model.backbone=densenet121,vgg16,convnext_tiny' -S train.head=linear
    dvc queue start            # then wait until `dvc queue status` shows none queued or running
    python -m stages.compare   # writes metrics/compare.md and metrics/compare.png

Only runs on the same prepared data with the same settings share a table: runs that differ in anything
but the backbone and the speed knobs are shown apart, under a heading that names the difference.
"""
import argparse
import logging

import matplotlib

from stages.lib import paths
from stages.lib.atomic import atomic_file
from stages.lib.errors import one_line_errors
from stages.lib.experiments import Result, grouped, result_of, runs, show_experiments
from stages.lib.scores import Z

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


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
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    with one_line_errors():
        print(compare(show_experiments()), end="")


if __name__ == "__main__":
    main()

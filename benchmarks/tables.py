"""The benchmarks' plain-text tables, and the targets they judge by."""
import os
import platform
from importlib.metadata import version
from pathlib import Path

from benchmarks.workload import EPOCHS
from stages.lib import paths

TARGET_RATIO = 8.0  # the seed's time over ours, end to end
MEMORY_GROWTH_TARGET = 1.2  # peak at 4N over peak at N
MEMORY_CEILING_MB = 3 * 1024


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def machine() -> dict:
    """What the numbers depend on; the load average shows whether something else shared the CPU."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(), "tensorflow": version("tensorflow"), "keras": version("keras")}


def machine_line(about: dict) -> str:
    """The load average before the run is other work's: well above 0, and it shared the CPU with the benchmarks."""
    return (f"{about['cpu']}, {about['cores']} cores, TensorFlow {about['tensorflow']}; "
            f"load average before the run {about['load_average_at_start'][0]:.1f}.")


def end_to_end_table(rows: list[dict], line: dict) -> str:
    """`line`: crossover(rows), the lines through the smallest and largest run."""
    headers = ["images", "train/val/test", "ours s", "prep/extr/train/eval s", "seed s", "seed/ours", "bound",
               "ours acc", "seed acc", "|diff|", "tolerance", "ok"]
    lines = [[row["images"], "/".join(str(row["counts"][split]) for split in paths.SPLITS),
              f"{row['ours_seconds']:.1f}", "/".join(f"{s:.0f}" for s in row["ours_stage_seconds"].values()),
              f"{row['seed_seconds']:.1f}", f"{row['ratio']:.2f}x", f"{row['forward_pass_bound']:.1f}x",
              f"{row['ours_accuracy']:.3f}", f"{row['seed_accuracy']:.3f}", f"{row['accuracy_difference']:.3f}",
              f"{row['accuracy_tolerance']:.3f}", "yes" if row["within_tolerance"] else "NO"] for row in rows]
    reached = [row["images"] for row in rows if row["ratio"] >= TARGET_RATIO]
    measured = (f"smallest size measured reaching {TARGET_RATIO:.0f}x: {min(reached)} images" if reached
                else f"{TARGET_RATIO:.0f}x not reached at the sizes measured")
    extrapolated = (f"reaches {TARGET_RATIO:.0f}x from about {line['reaches_target_from_images']:,.0f} images"
                    if line["reaches_target_from_images"] else f"never reaches {TARGET_RATIO:.0f}x")
    size, engine = rows[0]["image_size"], rows[0]["engine"]
    notes = [f"DenseNet-121 at {size}x{size}, {EPOCHS} epochs, extract.engine auto ({engine}); wall clock of the four "
             f"stage processes against the one seed process; test is a sixth of the images, as in CIFAR-10.",
             "bound: the seed/ours ratio of backbone forward passes alone; start-up keeps the measured ratio below it.",
             "tolerance: two binomial standard errors of the test accuracy (at least one image).", measured,
             f"Extrapolated on lines through the smallest and largest run: ours {line['ours_fixed_seconds']:.0f} s + "
             f"{line['ours_seconds_per_image']:.3f} s/image, seed {line['seed_fixed_seconds']:.0f} s + "
             f"{line['seed_seconds_per_image']:.3f} s/image; the ratio tends to {line['limit_ratio']:.1f}x and "
             f"{extrapolated}."]
    return table(headers, lines) + "\n" + "\n".join(notes)


def throughput_table(result: dict, count: int, batch_size: int) -> str:
    headers = ["backbone", "engine", "GFLOPs/img", "warm-up s", "ours img/s", "predict img/s", "ours/predict",
               "ours %peak", "predict %peak"]
    lines = [[row["backbone"], row["engine"], f"{row['gflops_per_image']:.2f}", f"{row['warm_up_seconds']:.1f}",
              f"{row['images_per_second']:.2f}", f"{row['predict_images_per_second']:.2f}", f"{row['ratio']:.2f}x",
              f"{row['peak_fraction']:.0%}", f"{row['predict_peak_fraction']:.0%}"] for row in result["rows"]]
    note = (f"224x224, {count} random images in batches of {batch_size} after one warm-up batch; dense matmul peak "
            f"{result['matmul_peak_gflops']:.1f} GFLOP/s (float32 2048x2048, best of 10 rounds).")
    return table(headers, lines) + "\n" + note


def memory_table(rows: list[dict]) -> str:
    """prepare's and extract's peaks at the smallest and largest end-to-end size."""
    small, large = rows[0], rows[-1]
    headers = ["stage", "measure", f"{small['images']} images MB", f"{large['images']} images MB", "ratio", "ok"]
    lines = []
    for stage in ("prepare", "extract"):
        for measure in ("peak_anonymous", "peak_rss"):
            low, high = small["memory_mb"][stage][measure], large["memory_mb"][stage][measure]
            ok = high / low <= MEMORY_GROWTH_TARGET and high < MEMORY_CEILING_MB
            lines.append([stage, measure.replace("_", " "), f"{low:.0f}", f"{high:.0f}", f"{high / low:.2f}",
                          "yes" if ok else "NO"])
    size = small["image_size"]
    note = (f"At {size}x{size}. peak anonymous: the process's own memory (RssAnon, sampled every 50 ms); "
            f"peak rss: wait4's ru_maxrss, what `/usr/bin/time -f %M` reports, file pages the process held "
            f"included. Target: ratio <= {MEMORY_GROWTH_TARGET} and under {MEMORY_CEILING_MB / 1024:.0f} GB.")
    return table(headers, lines) + "\n" + note


def head_table(result: dict) -> str:
    headers = ["features", "epochs", "ours s", "plain s (estimated)", "plain/ours", "plain epoch s", "ours epoch s"]
    ours, plain = result["ours_seconds"], result["plain_seconds_estimated"]
    line = [f"{result['train_features']:,} x {result['width']:,}", result["epochs"], f"{ours:.1f}", f"{plain:.1f}",
            f"{plain / ours:.2f}x", f"{result['plain_epoch_seconds']:.1f}", f"{ours / result['epochs']:.1f}"]
    note = (f"The seed's head, batch 32, with {result['val_features']:,} validation vectors. ours: stages.train's fit "
            f"(tf.data, many steps per call, XLA on one CPU, else op determinism; {EPOCHS} epochs timed whole). "
            f"plain: Keras's fit on in-memory arrays with its defaults; two epochs timed, the first with compilation, "
            f"and {EPOCHS} estimated as the first plus {EPOCHS - 1} times the second.")
    return table(headers, [line]) + "\n" + note

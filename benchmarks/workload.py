"""The workload every benchmark runs, and how: the synthetic images as a folder dataset in CIFAR-10's
proportions, the params that read it, and a stage run as a process of its own, timed, with its peak memory."""
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 10  # the seed's
SEED = 42
BACKBONE = "densenet121"  # the project's default
TEST_SHARE = 1 / 6  # CIFAR-10: 10,000 test images of 60,000
VAL_SHARE = 0.1  # the project's 5,000 of 50,000 training images


@dataclass(frozen=True)
class Finished:
    seconds: float
    peak_rss_mb: float  # everything resident, file pages of memory-mapped arrays included
    peak_anonymous_mb: float  # the process's own memory, without the page cache


def anonymous_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just exited
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("RssAnon:")), 0.0)


def run_module(module: str, folder: Path, *args: str) -> Finished:
    """`python -m module` in `folder`, as dvc runs a stage: its wall clock and its peak memory."""
    log = folder / f"{module}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    peak_anonymous = 0.0
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, "-m", module, *args], cwd=folder, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        # wait4 returns the child's own rusage (ru_maxrss, KiB); the kernel keeps no peak of anonymous
        # memory, so that is sampled while the child runs.
        while not (waited := os.wait4(process.pid, os.WNOHANG))[0]:
            peak_anonymous = max(peak_anonymous, anonymous_mb(process.pid))
            time.sleep(0.05)
    _, status, usage = waited
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        tail = "\n".join(log.read_text().strip().splitlines()[-8:])
        raise RuntimeError(f"{module} exited with {process.returncode} in {folder}:\n{tail}")
    return Finished(seconds, usage.ru_maxrss / 1024, peak_anonymous)


def write_folder_dataset(root: Path, total_images: int) -> dict:
    """The synthetic images as a folder dataset in CIFAR-10's proportions (a sixth of them for test),
    and the params that read it. The synthetic source's data.limit would give test as many images as
    train, a split that caps any speed-up over the seed's recipe well below CIFAR-10's."""
    from PIL import Image

    from stages.lib.datasets import SYNTHETIC_CLASSES, synthetic_split

    test_count = max(len(SYNTHETIC_CLASSES), round(total_images * TEST_SHARE))
    for split_index, (split, count) in enumerate((("train", total_images - test_count), ("test", test_count))):
        images = synthetic_split(count, SEED, split_index)
        for number, (image, label) in enumerate(zip(images.images, images.labels)):
            folder = root / split / SYNTHETIC_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{number}.png")
    return {"source": "folder", "path": str(root), "limit": None,
            "val_size": max(len(SYNTHETIC_CLASSES), round((total_images - test_count) * VAL_SHARE))}


def run_params(data: dict, image_size: int) -> dict:
    """Overrides of params.yaml: the offline data at `image_size`, random weights, the seed's 10 epochs."""
    return {
        "data": {**data, "image_size": image_size},
        "model": {"backbone": BACKBONE, "weights": "none", "seed": SEED},
        "extract": {"enabled": True, "engine": "auto", "precision": "float32"},
        "train": {"epochs": EPOCHS, "fine_tune_layers": 0, "augment": False},
    }


def write_params(folder: Path, overrides: dict) -> None:
    """The repository's params.yaml with `overrides`, so everything not benchmarked stays the project's default."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

"""The GPU check: the jax engine's extraction on the GPU, float32 and mixed, against torchvision on the same GPU.

    python -m benchmarks.gpu_check reference   here, beforehand: the CPU's float32 features of the first
                                               test images, into .gpu_check/
    python -m benchmarks.gpu_check run         there: prepare, extract (float32 twice, then mixed), compare
                                               with the reference, and torchvision's DenseNet-121 beside it

Both take --images (per split; at least 5,000 for the 10,000 images of a real check) and --image-size, and
must be given the same. `run` runs the real stages on synthetic data in a temporary folder.
"""
import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from stages.lib import paths

REPO = Path(__file__).resolve().parents[1]
# The reference, carried to the GPU machine beside the wheels (elsewhere for a test).
CARRIED = Path(os.environ.get("GPU_CHECK_REFERENCE", REPO / ".gpu_check"))
REFERENCE = CARRIED / "cpu_features.npy"
MADE_FOR = CARRIED / "made_for.json"  # the --images and --image-size the reference was computed for
COMPARED = 256  # test images whose GPU features are held against the CPU's


def write_params(work: Path, images: int, size: int, precision: str = "float32") -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="synthetic", image_size=size, limit=images, val_size=max(10, images // 10))
    params["model"].update(backbone="densenet121", weights="none")  # drawn alike on every backend
    params["extract"].update(engine="jax", precision=precision)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage(module: str, work: Path) -> float:
    """`python -m module` in `work` on Keras's JAX backend; its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "KERAS_BACKEND": "jax", "KERAS_HOME": str(work / "keras-home")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", module], cwd=work, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{module} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def prepared(images: int, size: int) -> Path:
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    write_params(work, images, size)
    seconds = stage("stages.check", work) + stage("stages.prepare", work)
    print(f"prepare: {seconds:.1f} s")
    return work


def reference(images: int, size: int) -> None:
    """Here: the CPU's float32 features of the first test images, computed by the stage's own engine in its
    batches: the stage then finds that compilation in JAX's cache."""
    from stages.lib.cache import RowReader, SplitRows  # here: main() has chosen Keras's backend
    from stages.lib.features import batch_starts, build_engine, engine_batch_size, image_batches, prepared_images
    from stages.lib.params import load_params

    CARRIED.mkdir(exist_ok=True)
    work = prepared(images, size)
    with contextlib.chdir(work):
        params = load_params()
        engine, _, _ = build_engine(params, size)
        batch_size = engine_batch_size(params.extract.batch_size, len(prepared_images()))
        test_images = SplitRows({"test": RowReader(paths.images("test"))})
        count = min(COMPARED, len(test_images))
        features = [engine(batch) for batch in image_batches(test_images, batch_size, batch_starts(count, batch_size))]
    np.save(REFERENCE, np.concatenate(features)[:count])
    MADE_FOR.write_text(json.dumps({"images": images, "image_size": size}))
    shutil.rmtree(work)
    print(f"reference: the features of {count} test images ({REFERENCE.stat().st_size / 2**20:.1f} MiB) in {CARRIED}")


def extracted(work: Path, precision: str, images: int, size: int, keep: str) -> dict:
    write_params(work, images, size, precision)
    wall = stage("stages.extract", work)
    timing = json.loads((work / paths.EXTRACT_TIMING).read_text())["extract"]
    shutil.copytree(work / paths.FEATURES, work / keep)
    print(f"extract {precision:>7} on {timing['devices'][0]}: {timing['images_per_second']:8.1f} images/s after the "
          f"first batch; {wall:.1f} s for the whole stage ({timing['images']} images)")
    return timing


def anchor(batch_size: int, size: int, batches: int, bfloat16: bool) -> float | None:
    """torchvision's DenseNet-121 (random weights), features and average pooling, channels-last, on uint8
    batches from the host as the stage gets them: images/s."""
    try:
        import torch
        import torchvision
    except ImportError:
        print("anchor: torchvision is not installed here; skipped")
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # float32 is float32
    model = torchvision.models.densenet121().features.to(device, memory_format=torch.channels_last).eval()
    host = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8).pin_memory() \
        if device == "cuda" else torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)

    def run() -> None:
        with torch.inference_mode(), torch.autocast(device, torch.bfloat16, enabled=bfloat16):
            images = host.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
            pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(model(images / 255)), 1).flatten(1)
            pooled.float().cpu()

    run()
    start = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * batch_size / (time.perf_counter() - start)


def check(images: int, size: int) -> bool:
    from stages.lib.saved_model_check import FEATURE_TOLERANCE, relative_differences

    if json.loads(MADE_FOR.read_text()) != {"images": images, "image_size": size}:
        raise SystemExit(f"{CARRIED} holds the reference for {MADE_FOR.read_text()}; make it again for --images "
                         f"{images} --image-size {size} (bash benchmarks/gpu_check.sh --fetch)")
    work = prepared(images, size)
    float32 = extracted(work, "float32", images, size, "float32-1")
    extracted(work, "float32", images, size, "float32-2")
    same = all((work / "float32-1" / name).read_bytes() == (work / "float32-2" / name).read_bytes()
               for name in os.listdir(work / "float32-1"))
    print(f"two float32 runs: {'byte-identical' if same else 'DIFFERENT BYTES'}")
    gpu = np.load(work / "float32-1" / paths.features("test").name, mmap_mode="r")[:COMPARED]
    difference = float(relative_differences(gpu, np.load(REFERENCE)).max())
    close = difference <= FEATURE_TOLERANCE["float32"]
    print(f"float32 on {float32['devices'][0]} against the CPU reference: largest relative difference "
          f"{difference:.3g} over {len(gpu)} images (tolerance {FEATURE_TOLERANCE['float32']})")
    rates = {"float32": float32["images_per_second"]}
    if float32["devices"][0].startswith("GPU"):
        rates["mixed"] = extracted(work, "mixed", images, size, "mixed")["images_per_second"]
    batch_size = yaml.safe_load((work / "params.yaml").read_text())["extract"]["batch_size"]
    for precision, rate in rates.items():
        torch_rate = anchor(batch_size, size, max(3, min(50, images // batch_size)), precision == "mixed")
        if torch_rate:
            print(f"{precision}: ours {rate:.1f} images/s, torchvision {torch_rate:.1f} images/s: "
                  f"{rate / torch_rate:.2f}x")
    shutil.rmtree(work, ignore_errors=True)
    print("gpu_check:", "passed" if same and close else "FAILED")
    return same and close


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["reference", "run"])
    parser.add_argument("--images", type=int, default=5000, help="synthetic images per split (data.limit)")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    os.environ["KERAS_BACKEND"] = "jax"  # all of it, as on the GPU machine, which has no TensorFlow
    if args.step == "reference":
        reference(args.images, args.image_size)
    else:
        sys.exit(0 if check(args.images, args.image_size) else 1)


if __name__ == "__main__":
    main()

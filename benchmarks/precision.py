"""How far bfloat16 features are from float32 ones: the figure behind evaluate's tolerance for `mixed`.

Runs the real stages on synthetic data in a temporary folder: prepare, extract (float32), train,
then extract again with `extract.precision: mixed` on each engine, and compares the features and
the head's predictions with the saved float32 model's. Needs a CPU with AVX512-BF16 or AMX.

    python -m benchmarks.precision [--image-sizes 32,96] [--images 400]
"""
import argparse
import contextlib
import tempfile
from pathlib import Path

import keras
import numpy as np
import yaml

from stages import extract, prepare, train

from stages.lib import paths
from stages.lib.saved_model_check import relative_differences, saved_model_features
from stages.lib.atomic import read_json
from stages.lib.params import load_params

ENGINES = ("tensorflow", "openvino")
SHIPPED_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_params(folder: Path, image_size: int, images: int, extract_changes: dict) -> None:
    params = yaml.safe_load(SHIPPED_PARAMS.read_text())
    params["data"].update(source="synthetic", image_size=image_size, limit=images, val_size=images // 4)
    params["model"]["weights"] = "none"
    params["extract"].update({"engine": "tensorflow", "precision": "float32", **extract_changes})
    params["train"]["epochs"] = 5
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def measure(image_size: int, images: int) -> None:
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        write_params(Path(folder), image_size, images, {})
        params = load_params()
        for stage in (prepare, extract, train):
            stage.run(params)
        model = keras.models.load_model(paths.INFERENCE_MODEL)
        head_layer = read_json(paths.MODEL_RECORD)["head_layer"]
        head = model.get_layer(head_layer)
        saved_features = saved_model_features(model, head_layer, np.load(paths.images("test")))
        for engine in ENGINES:
            write_params(Path(folder), image_size, images, {"engine": engine, "precision": "mixed"})
            extract.run(load_params())
            mixed = np.load(paths.features("test"))
            differences = relative_differences(saved_features, mixed)
            probabilities = head.predict(saved_features, verbose=0), head.predict(mixed, verbose=0)
            flipped = int(np.sum(probabilities[0].argmax(1) != probabilities[1].argmax(1)))
            print(f"{image_size}x{image_size} {engine:10s} relative feature difference: largest "
                  f"{differences.max():.4f}, median {np.median(differences):.4f}; largest probability difference "
                  f"{np.abs(probabilities[0] - probabilities[1]).max():.4f}; top class flipped on {flipped} of "
                  f"{len(differences)} test images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-sizes", default="32,96", help="comma-separated data.image_size values")
    parser.add_argument("--images", type=int, default=400, help="data.limit: images per split")
    args = parser.parse_args()
    print("DenseNet-121, weights: none, bfloat16 (mixed) features against the saved float32 model's own")
    for size in map(int, args.image_sizes.split(",")):
        measure(size, args.images)


if __name__ == "__main__":
    main()

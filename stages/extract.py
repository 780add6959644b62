"""Stage 2: run every cached image once through the frozen backbone and keep its pooled features."""
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from stages import paths
from stages.atomic import atomic_directory, read_json, write_json
from stages.backbones import build_backbone, image_model, use_accelerator
from stages.cli import run_stage
from stages.params import Params

log = logging.getLogger("extract")


def image_batches(images: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches read from the memory-mapped cache, prefetched while the previous batch computes."""
    def read():
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]

    signature = tf.TensorSpec((None, *images.shape[1:]), tf.uint8)
    return tf.data.Dataset.from_generator(read, output_signature=signature).prefetch(2)


def compile_extractor(extractor: keras.Model, jit: bool):
    """One traced function for every split; only the batch dimension varies."""
    signature = [tf.TensorSpec((None, *extractor.input.shape[1:]), tf.uint8)]
    return tf.function(lambda batch: extractor(batch, training=False), input_signature=signature, jit_compile=jit)


def extract_split(infer, width: int, images: np.ndarray, batch_size: int, out: Path) -> None:
    features = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(images), width))
    start = 0
    with tqdm(total=len(images), desc=f"extract {out.stem}", unit="img", disable=None) as progress:
        for batch in image_batches(images, batch_size):
            batch_features = keras.ops.convert_to_numpy(keras.ops.cast(infer(batch), "float32"))
            features[start:start + len(batch_features)] = batch_features
            start += len(batch_features)
            progress.update(len(batch_features))
    features.flush()


def run(params: Params) -> None:
    model, extract = params.model, params.extract
    image_size = read_json(paths.PREPARED_INFO)["image_size"]
    with atomic_directory(paths.FEATURES) as out:
        if extract.enabled:
            jit = use_accelerator()
            backbone = build_backbone(model.backbone, model.weights, image_size, model.seed)
            extractor = image_model(model.backbone, backbone, image_size, input_size=image_size)
            infer, width = compile_extractor(extractor, jit), extractor.output.shape[-1]
            for split in paths.SPLITS:
                images = np.load(paths.images(split), mmap_mode="r")
                log.info("extracting %d %s images with %s at %dx%d", len(images), split, model.backbone, image_size, image_size)
                extract_split(infer, width, images, extract.batch_size, paths.features(split, out))
        else:
            log.info("extract.enabled is false: train will run images through the backbone every epoch")
        write_json(paths.info(out), {"enabled": extract.enabled, "backbone": model.backbone, "image_size": image_size})


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()

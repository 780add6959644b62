"""Bilinear resizing in NumPy, with the arithmetic of keras.layers.Resizing (TensorFlow's ResizeBilinear,
half-pixel centres, no antialiasing): `prepare` caches what the saved model's own resize layer computes,
bit for bit, without importing TensorFlow (seconds of every run's start-up)."""
import numpy as np

RESIZE_CHUNK = 32  # images resized at a time: bounds memory at 224x224 to ~20 MB of float32


def source_pixels(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel along one axis: the input pixel before it, the one after, and the weight of the
    one after. float32, in TensorFlow's order of operations."""
    scale = np.float32(in_size) / np.float32(out_size)
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floors = np.floor(centres)
    before = np.maximum(floors, 0).astype(np.intp)
    after = np.minimum(np.ceil(centres), in_size - 1).astype(np.intp)
    return before, after, centres - floors


def interpolate(images: np.ndarray, before: np.ndarray, after: np.ndarray, weights: np.ndarray,
                axis: int) -> np.ndarray:
    """before + (after - before) * weight along `axis`, in place in the gathered copy."""
    low = np.take(images, before, axis=axis)
    result = np.take(images, after, axis=axis)
    np.subtract(result, low, out=result)
    np.multiply(result, weights.reshape((-1,) + (1,) * (images.ndim - 1 - axis)), out=result)
    return np.add(result, low, out=result)


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """A batch (N, H, W, C) of any numeric type, resized to (N, height, width, C) float32."""
    images = images.astype(np.float32, copy=False)
    # Across each input row once, then down between rows: TensorFlow's two interpolations, in its order.
    rows = interpolate(images, *source_pixels(images.shape[2], width), axis=2)
    return interpolate(rows, *source_pixels(images.shape[1], height), axis=1)


def cached_pixels(batches, size: int) -> np.ndarray:
    """Batches of any sizes, resized to size x size and rounded to the cache's uint8. The saved model's resize
    layer computes the same floats: cached and in-model resizing agree."""
    resized = np.concatenate([resize_bilinear(batch, size, size) for batch in batches])
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)

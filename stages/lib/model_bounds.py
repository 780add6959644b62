"""What a model file may make Keras allocate, bounded before Keras builds anything from it: safe mode stops
code, not memory. A config may ask for layers of any width and a resize to any size, and an HDF5 file may
declare datasets far larger than itself; a trained model's variables fit in the weights its file holds."""
import io
import json
import math
import zipfile
from contextlib import contextmanager
from pathlib import Path

import h5py

from stages.lib.frameworks import keras  # first: Keras imported without its optional extras
from stages.lib.params import MAX_IMAGE_SIZE
from stages.lib.quoting import shown

class TooLarge(ValueError):
    """A model file asking for more than it holds; Keras may wrap it in an error of its own."""


def too_large(error: BaseException) -> TooLarge | None:
    """The TooLarge behind `error`, however deep Keras wrapped it."""
    while error is not None and not isinstance(error, TooLarge):
        error = error.__cause__ or error.__context__
    return error


MAX_CONFIG_BYTES = 16 * 2**20  # the DenseNet-121 classifier's config.json is about 0.5 MB
VARIABLES_SLACK = 16 * 2**20  # metrics' and seed generators' variables, which the weights file leaves out


def declared_bytes(weights: h5py.File) -> int:
    """What the datasets of an HDF5 file claim to hold, read from its metadata alone."""
    sizes = []
    weights.visititems(lambda _, item: sizes.append(item.size * item.dtype.itemsize)
                       if isinstance(item, h5py.Dataset) else None)
    return sum(sizes)


def check_resizing(config, path: Path) -> None:
    """A Resizing layer, which predict also runs on each image on its own, must stay within image sizes."""
    if isinstance(config, list):
        for item in config:
            check_resizing(item, path)
    elif isinstance(config, dict):
        if config.get("class_name") == "Resizing":
            sides = [config.get("config", {}).get(side) for side in ("height", "width")]
            if not all(isinstance(side, int) and 0 < side <= MAX_IMAGE_SIZE for side in sides):
                raise TooLarge(f"{shown(path)} resizes images to {shown(sides)}; at most {MAX_IMAGE_SIZE} a side")
        for value in config.values():
            check_resizing(value, path)


def weights_budget(path: Path) -> int:
    """The bytes of variables a model file may make Keras create: what its weights hold, checked to be
    there, plus a little; its config checked on the way."""
    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as saved:
            config = saved.getinfo("config.json")
            if config.file_size > MAX_CONFIG_BYTES:
                raise TooLarge(f"{shown(path)}: its config.json of {config.file_size:,} bytes is far larger than "
                                 f"a model's")
            check_resizing(json.loads(saved.read(config)), path)
            member = saved.getinfo("model.weights.h5")
            stored = member.file_size
            with saved.open(member) as weights_file:
                # h5py seeks back and forth, and each seek back in a zip member reads it again from its start.
                # Stored uncompressed, as Keras saves it, the member is read whole: no more than the file holds.
                if member.compress_type == zipfile.ZIP_STORED:
                    weights_file = io.BytesIO(weights_file.read())
                with h5py.File(weights_file, "r") as weights:
                    declared = declared_bytes(weights)
    else:
        stored = path.stat().st_size
        with h5py.File(path, "r") as weights:
            attribute = weights.attrs.get_id("model_config")
            if attribute.get_storage_size() > MAX_CONFIG_BYTES:
                raise TooLarge(f"{shown(path)}: its model config is far larger than a model's")
            check_resizing(json.loads(weights.attrs["model_config"]), path)
            declared = declared_bytes(weights)
    if declared > 2 * stored + 2**20:
        raise TooLarge(f"{shown(path)} declares {declared:,} bytes of weights in a file of {stored:,}; it is "
                         f"damaged or crafted")
    return declared + VARIABLES_SLACK


@contextmanager
def variables_within(budget: int, path: Path):
    """Refuse, before it is allocated, any variable past `budget` bytes in all: a config asking for wider
    layers than its weights is refused before the memory is taken, not after."""
    Variable = keras.src.backend.common.variables.Variable  # every backend's variables are made by it
    validate_shape = Variable._validate_shape
    made, seen = 0, set()

    def counted(variable, shape):
        nonlocal made
        shape = validate_shape(variable, shape)
        if id(variable) in seen:  # JAX's variables check their shape again when they take their value
            return shape
        seen.add(id(variable))
        made += math.prod(shape) * 4  # float32; narrower types only leave more room
        if made > budget:
            raise TooLarge(f"{shown(path)} asks for more variables than its weights fill ({made:,} bytes past "
                             f"{budget:,}); its config does not match its weights")
        return shape

    Variable._validate_shape = counted
    try:
        yield
    finally:
        Variable._validate_shape = validate_shape

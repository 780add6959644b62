"""A .keras file with the same bytes for the same model: Keras writes into it the time of saving, ids of
Python objects of the saving process, and the weights member's modification time. Same params, same
bytes holds for the model too, so DVC and train's record see one file where nothing changed."""
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from stages.lib.frameworks import keras

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry
SAVED_AT = "1980-01-01@00:00:00"  # Keras's metadata format; the file's own time is the file system's


def renumbered(config, ids: dict | None = None):
    """The config with its shared-object ids numbered in order of appearance, which keeps which objects
    are shared (all Keras reads them for) and drops the process's id()s."""
    ids = {} if ids is None else ids
    if isinstance(config, list):
        return [renumbered(item, ids) for item in config]
    if not isinstance(config, dict):
        return config
    copy = {key: renumbered(value, ids) for key, value in config.items()}
    if "shared_object_id" in copy:
        copy["shared_object_id"] = ids.setdefault(copy["shared_object_id"], len(ids))
    return copy


def repacked(source: Path, target: Path) -> None:
    """`source`, a .keras file as Keras wrote it, as `target` with fixed times and renumbered ids."""
    with zipfile.ZipFile(source) as saved, zipfile.ZipFile(target, "w") as fresh:
        for member in saved.infolist():
            fixed = zipfile.ZipInfo(member.filename, date_time=ZIP_EPOCH)
            fixed.compress_type, fixed.external_attr = member.compress_type, member.external_attr
            if member.filename == "config.json":
                fresh.writestr(fixed, json.dumps(renumbered(json.loads(saved.read(member)))))
            elif member.filename == "metadata.json":
                fresh.writestr(fixed, json.dumps({**json.loads(saved.read(member)), "date_saved": SAVED_AT}))
            else:  # the weights: copied in blocks, not held in memory
                with saved.open(member) as weights, fresh.open(fixed, "w") as copy:
                    shutil.copyfileobj(weights, copy, 1 << 20)


def save_keras(model: keras.Model, path: Path) -> None:
    """model.save(path) for a .keras `path`, with the same bytes every time for the same model."""
    with tempfile.TemporaryDirectory(prefix="keras-save-") as scratch:
        as_saved = Path(scratch) / "model.keras"
        model.save(as_saved)
        repacked(as_saved, path)

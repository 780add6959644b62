"""Every path the pipeline writes, declared once; dvc.yaml declares the same ones."""
from pathlib import Path

SPLITS = ("train", "val", "test")

PREPARED = Path("data/prepared")
# The check stage's mark that params.yaml passed: a dependency of every other stage, so that DVC runs it first.
PARAMS_CHECKED = PREPARED.parent / "params_checked.json"

WEIGHTS = Path("weights")  # local backbone weights files (model.weights), a dependency of extract and train

FEATURES = Path("data/features")

MODELS = Path("models")
INFERENCE_MODEL = MODELS / "cifar10.keras"
LEGACY_MODEL = MODELS / "cifar10.h5"  # the seed's file name, for K.models.load_model('cifar10.h5')


def classes_beside(model: Path) -> Path:
    """The class names travel with a model, in a file next to it."""
    return model.with_name(f"{model.stem}.classes.json")


def record_beside(model: Path) -> Path:
    """train's record of a model set: the head's layer, whether the cached features still fit, and the
    hash of every file of the set, so that a set mixed by an interrupted run is noticed."""
    return model.with_name(f"{model.stem}.info.json")


CLASSES = classes_beside(INFERENCE_MODEL)
SERVING = MODELS / "serving"  # `python -m stages.export`'s folders, one per format (not a stage's output)
MODEL_RECORD = record_beside(INFERENCE_MODEL)

METRICS = Path("metrics")
TRAIN_LOG = METRICS / "train"  # dvclive's folder: metrics.json and the per-epoch curves
TRAIN_CURVES = TRAIN_LOG / "plots/metrics"  # dvclive's: <split>/<metric>.tsv, one row per step
METRICS_FILE = METRICS / "metrics.json"
SAVED_MODEL_CHECK = METRICS / "saved_model_check.json"  # evaluate's bookkeeping: not a metric to compare
PER_CLASS = METRICS / "per_class.json"
CONFUSION = METRICS / "confusion.json"
CONFUSION_PNG = METRICS / "confusion_matrix.png"
MISTAKES_PNG = METRICS / "mistakes.png"
# Seconds spent, for comparing backbones: metrics, so that `dvc exp show` has them, in files of their own,
# because they differ between two runs that otherwise write the same bytes.
EXTRACT_TIMING = METRICS / "timing/extract.json"
TRAIN_TIMING = METRICS / "timing/train.json"
# Where writers leave their work in progress (see atomic.py): data/features.<pid>.partial and the like.
OUTPUT_FOLDERS = (PREPARED.parent, MODELS, METRICS, EXTRACT_TIMING.parent)
# `python -m stages.compare`'s table and chart of the experiments (not a stage's output).
COMPARE_TABLE = METRICS / "compare.md"
COMPARE_PNG = METRICS / "compare.png"


def is_stage_output(path) -> bool:
    """Whether `path` is one a stage writes for a later one to read."""
    return isinstance(path, str) and any(Path(path).is_relative_to(root) for root in (PREPARED, FEATURES, MODELS))


def info(root: Path) -> Path:
    return root / "info.json"


PREPARED_INFO = info(PREPARED)
FEATURES_INFO = info(FEATURES)


def images(split: str, root: Path = PREPARED) -> Path:
    return root / f"{split}_images.npy"


def labels(split: str, root: Path = PREPARED) -> Path:
    return root / f"{split}_labels.npy"


def features(split: str, root: Path = FEATURES) -> Path:
    return root / f"{split}.npy"


def export_record(folder: Path) -> Path:
    """What `python -m stages.export` wrote into a folder: the mark that it may replace the folder."""
    return folder / "export.json"

"""Each stage's run() on tiny synthetic data: shapes, dtypes, files, and numbers that must agree."""
import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
from PIL import Image
import pytest

from stages import evaluate, extract, prepare, train

from stages.lib import cifar10, paths, saved_model_check
from stages.lib.atomic import sha256_of
from stages.lib.batches import Batches
from stages.lib.cache import RowReader, SplitRows
from stages.lib.classifier import save_classifier
from stages.lib.features import batch_starts, engine_batch_size, extract_rows, padded_batch, write_rows
from stages.lib.fitting import fit
from stages.lib.params import load_params
from tests.helpers import ABOVE_CHANCE, REPO, fabricated_cifar, run_stages, write_params


def test_prepare_caches_resized_uint8_images_and_one_hot_labels(workdir):
    write_params(workdir, {"data": {"image_size": 48}})
    run_stages(prepare)
    info = json.loads(paths.PREPARED_INFO.read_text())
    assert info["counts"] == {"train": 300, "val": 100, "test": 400} and info["image_size"] == 48
    for split, count in info["counts"].items():
        images, labels = np.load(paths.images(split), mmap_mode="r"), np.load(paths.labels(split))
        assert images.shape == (count, 48, 48, 3) and images.dtype == np.uint8
        assert labels.shape == (count, 10) and labels.dtype == np.uint8
        assert labels.sum(axis=1).tolist() == [1] * count
    assert np.load(paths.labels("val")).sum(axis=0).tolist() == [10] * 10  # stratified
    assert not list(workdir.glob("data/*.partial"))


def test_prepare_reads_the_cifar_archive_pixel_exact(workdir):
    archive, splits = fabricated_cifar(workdir / "cifar.tar.gz", per_batch=(20,) * 5, test_count=30)
    write_params(workdir, {"data": {"source": "cifar10", "archive": str(archive), "verify": False,
                                    "val_size": 20, "limit": None}})
    run_stages(prepare)
    info = json.loads(paths.PREPARED_INFO.read_text())
    assert info["classes"][0] == "airplane" and len(info["archive_sha256"]) == 64
    # At 32x32 the cache holds the archive's own pixels; train + val are the training batches, reordered.
    cached = np.concatenate([np.load(paths.images("train")), np.load(paths.images("val"))])
    original = np.concatenate([splits[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert sorted(map(bytes, cached)) == sorted(map(bytes, original))
    np.testing.assert_array_equal(np.load(paths.images("test")), splits["test_batch"][0])
    np.testing.assert_array_equal(np.load(paths.labels("test")).argmax(1), splits["test_batch"][1])


def test_prepare_without_the_archive_downloads_the_shared_copy_once(workdir, monkeypatch):
    source, _ = fabricated_cifar(workdir / "served.tar.gz", per_batch=(20,) * 5, test_count=30)
    monkeypatch.setattr(cifar10, "URL", source.as_uri())
    write_params(workdir, {"data": {"source": "cifar10", "verify": False, "val_size": 20, "limit": None}})
    run_stages(prepare)
    assert not Path(load_params().data.archive).exists()  # data/raw/...: nothing downloaded into the workspace
    assert cifar10.shared_archive().read_bytes() == source.read_bytes()
    assert json.loads(paths.PREPARED_INFO.read_text())["archive_sha256"] == sha256_of(source)
    source.unlink()  # a second run, e.g. a queued experiment, needs no download
    run_stages(prepare)


def test_the_whole_chain_in_process(evaluated):
    for split, count in {"train": 300, "val": 100, "test": 400}.items():
        features = np.load(paths.features(split))
        assert features.shape == (count, 1024) and features.dtype == np.float32
    params = load_params()
    epochs = (paths.TRAIN_LOG / "plots/metrics/train/accuracy.tsv").read_text().strip().splitlines()[1:]
    assert len(epochs) == params.train.epochs
    assert json.loads(paths.TRAIN_TIMING.read_text())["head_seconds"] > 0
    metrics = json.loads(paths.METRICS_FILE.read_text())
    assert metrics["test_images"] == 400
    assert metrics["accuracy"] > ABOVE_CHANCE, metrics
    check = json.loads(paths.SAVED_MODEL_CHECK.read_text())
    assert check["images"] == 32 and check["max_relative_feature_difference"] < 1e-4, check
    assert len(json.loads(paths.CONFUSION.read_text())) == 400
    for picture in (paths.CONFUSION_PNG, paths.MISTAKES_PNG):
        with Image.open(picture) as drawn:
            assert drawn.format == "PNG" and np.asarray(drawn.convert("L")).std() > 20, f"{picture} is blank"

    test_images = np.load(paths.images("test"))[:16]
    head_layer = json.loads(paths.MODEL_RECORD.read_text())["head_layer"]
    expected = None
    for path in (paths.INFERENCE_MODEL, paths.LEGACY_MODEL):
        model = keras.models.load_model(path, safe_mode=True)
        if expected is None:  # the head alone on the cached features, as evaluate measured
            expected = model.get_layer(head_layer).predict(np.load(paths.features("test"))[:16], verbose=0)
        # Called eagerly: predict() would trace DenseNet-121 for each model and input size, 3 s each.
        np.testing.assert_allclose(called(model, test_images), expected, atol=1e-4)
    larger = called(model, np.zeros((2, 64, 80, 3), np.uint8))  # any size: the model resizes
    assert larger.shape == (2, 10) and np.allclose(larger.sum(1), 1, atol=1e-5)


def called(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images, training=False))


def test_a_failing_stage_keeps_the_previous_output(workdir, tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "URL", (tmp_path / "offline.tar.gz").as_uri())
    run_stages(prepare)
    before = paths.images("train").read_bytes()
    write_params(workdir, {"data": {"source": "cifar10", "archive": str(tmp_path / "absent.tar.gz")}})
    with pytest.raises(FileNotFoundError):
        run_stages(prepare)
    assert paths.images("train").read_bytes() == before
    assert not list(workdir.glob("data/*.partial"))


def test_the_progress_bar_in_a_terminal_counts_the_steps_that_ran(tmp_path, capsys, monkeypatch):
    from dvclive import Live

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: Keras's bar, not a line per epoch
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(100, 4)).astype(np.float32), np.eye(2)[rng.integers(0, 2, 100)]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with Live(dir=str(tmp_path / "curves"), dvcyaml=False, save_dvc_exp=False) as live:
        fit(model, "train.learning_rate", 0.01, 2, Batches(features, labels, 10, seed=0),
            Batches(features, labels, 10, seed=None), live, on_features=True)  # 10 steps, as many calls of 64
    counts = [int(done) for done in re.findall(r"(\d+)/10\b", capsys.readouterr().out)]
    assert counts and max(counts) == 10, counts


def test_evaluate_tolerates_feature_noise_of_bfloat16_size(evaluated):
    # Twice the largest difference measured between bfloat16 and float32 features (0.0085).
    features = np.load(paths.features("test"))
    noise = np.random.default_rng(0).uniform(-2 ** -5, 2 ** -5, size=features.shape).astype(np.float32)
    np.save(paths.features("test"), features * (1 + noise))
    info = json.loads(paths.FEATURES_INFO.read_text())
    paths.FEATURES_INFO.write_text(json.dumps({**info, "precision": "mixed"}))
    run_stages(evaluate)
    check = json.loads(paths.SAVED_MODEL_CHECK.read_text())
    # More than float32 features may differ: evaluate refuses that much (the changed backbone's test below).
    float32 = saved_model_check.FEATURE_TOLERANCE["float32"]
    assert float32 < check["max_relative_feature_difference"] <= check["tolerance"], check


def test_the_saved_model_check_gets_the_same_features_eagerly_and_through_predict(evaluated, monkeypatch):
    model = keras.models.load_model(paths.INFERENCE_MODEL)
    head_layer = json.loads(paths.MODEL_RECORD.read_text())["head_layer"]
    images = np.load(paths.images("test"))[:8]
    assert images.shape[1] <= saved_model_check.EAGER_CHECK_MAX_SIZE
    eager = saved_model_check.saved_model_features(model, head_layer, images)
    monkeypatch.setattr(saved_model_check, "EAGER_CHECK_MAX_SIZE", 0)  # as for images over that size
    traced = saved_model_check.saved_model_features(model, head_layer, images)
    assert eager.shape == traced.shape == (8, 1024)
    np.testing.assert_allclose(eager, traced, rtol=1e-4, atol=1e-6 * float(np.abs(traced).max()))


def test_evaluate_runs_the_test_images_through_the_model_in_batches_of_one_shape(extracted, monkeypatch):
    # A short last batch would have Keras trace the model a second time, which costs as long as the first.
    keras.utils.set_random_seed(0)  # the same weights whichever test ran before in this process
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10, "softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
    shapes = []
    monkeypatch.setattr(model, "predict_on_batch", lambda batch: shapes.append(batch.shape) or model(batch))
    probabilities = evaluate.test_probabilities(model, {}, None, batch_size=64)
    images = np.load(paths.images("test"))
    assert len(images) % 64 and shapes == [(64, 32, 32, 3)] * -(-len(images) // 64)
    # Other batch shapes sum in another order: logits in the hundreds (raw pixels) round apart, up to 3e-5
    # relative over 12 seeds (atol=1e-6 alone failed 2 of them).
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_the_eager_saved_model_check_of_a_convnext_warns_of_no_retracing():
    # In a process of its own: TensorFlow warns at most twice per process of such retracing.
    probe = ("import numpy as np; from stages.lib.errors import run_stage; "
             "from stages.lib.saved_model_check import saved_model_features; "
             "from stages.lib.models import build_backbone, build_head, image_model; "
             "backbone = build_backbone('convnext_tiny', 'none', 32, 0); "
             "model = image_model('convnext_tiny', backbone, 32, head=build_head(768, 8, 10)); "
             "images = np.zeros((4, 32, 32, 3), np.uint8); "
             "run_stage(lambda params: print(saved_model_features(model, 'head', images).shape))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(4, 768)"
    assert "retracing" not in result.stderr, result.stderr


def test_evaluate_fails_on_a_saved_model_whose_backbone_was_changed(evaluated):
    model = keras.models.load_model(paths.INFERENCE_MODEL)
    backbone = model.get_layer("densenet121")
    last_block = backbone.get_layer("conv5_block16_2_conv")  # its 32 of the 1,024 pooled features
    last_block.set_weights([-weight for weight in last_block.get_weights()])
    # Saved as a whole set, as train saves one: only the comparison of features can tell.
    save_classifier(model, json.loads(paths.CLASSES.read_text()), json.loads(paths.MODEL_RECORD.read_text()))
    with pytest.raises(ValueError, match=r"^evaluate: models/cifar10.keras computes features of raw test images up "
                                         r"to .* \(tolerance 0.01 for extract.precision float32\)"):
        run_stages(evaluate)


def test_without_ray_address_extract_runs_here_and_never_imports_ray(extracted, monkeypatch):
    features = {split: paths.features(split).read_bytes() for split in paths.SPLITS}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    run_stages(extract)
    assert json.loads(paths.EXTRACT_TIMING.read_text())["extract"]["runner"] == "in-process"
    assert {split: paths.features(split).read_bytes() for split in paths.SPLITS} == features


def split_runs(tmp_path, counts: dict[str, int]) -> SplitRows:
    """Splits whose images are 2x2 pixels of one value, their number in the run plus 1000 per split."""
    images = {}
    for index, (split, count) in enumerate(counts.items()):
        rows = (1000 * index + np.arange(count)).astype(np.uint16).repeat(4).reshape(count, 2, 2, 1)
        np.save(tmp_path / f"{split}.npy", rows)
        images[split] = RowReader(tmp_path / f"{split}.npy")
    return SplitRows(images)


def test_batches_run_across_split_ends_so_only_the_last_is_padded(tmp_path):
    counts = {"train": 20, "val": 7, "test": 12}  # 39 images: 3 batches of 16, not 2 + 1 + 1 padded per split
    batches = []

    def engine(batch):  # the first pixel as the feature: which image went where
        batches.append(len(batch))
        return batch[:, 0, 0, :].astype(np.float32)

    run = split_runs(tmp_path, counts)
    batch_size = engine_batch_size(16, len(run))
    assert (batch_size, engine_batch_size(64, len(run))) == (16, 39)  # never more than all the images
    out = tmp_path / "features"
    out.mkdir()
    extract_rows(engine, 1, run, batch_size, out)
    assert batches == [16] * 3
    for index, (split, count) in enumerate(counts.items()):
        assert np.load(paths.features(split, out))[:, 0].tolist() == list(1000 * index + np.arange(count))
    assert padded_batch(run, 32, 16)[7:].max() == 0 and padded_batch(run, 32, 16)[6, 0, 0, 0] == 2011


def test_rows_that_come_out_of_order_short_or_not_finite_are_refused(tmp_path):
    """The checks a runner's batches pass (Ray's come from other processes): order, counts, finite values."""
    run, out = split_runs(tmp_path, {"train": 20, "val": 7, "test": 12}), tmp_path / "features"
    out.mkdir()
    computed = {start: np.ones((16, 3), np.float32) for start in batch_starts(len(run), 16)}
    with pytest.raises(ValueError, match="^extract: the batch of image 32 of the run came where image 16's was due"):
        write_rows([(0, computed[0]), (32, computed[32])], 3, run, 16, out)
    with pytest.raises(ValueError, match="test.npy: 0 rows written of 12$"):  # each split counted
        write_rows([(0, computed[0])], 3, run, 16, out)
    computed[16][9, 1] = np.nan  # row 25 of the run: val image 5
    with pytest.raises(ValueError, match="^extract: the backbone gave non-finite features for val image 5;"):
        write_rows(computed.items(), 3, run, 16, out)


def test_training_again_writes_every_model_file_byte_for_byte(evaluated):
    """Same params, same bytes: the .keras too (no save time, no process's object ids), and so train's record.
    The first run is the shared `dvc repro`'s, in a process of its own; Keras's session is cleared for this
    one, as a new process starts with no layer named yet."""
    def model_files() -> dict[str, str]:
        return {path.name: sha256_of(path) for path in sorted(paths.MODELS.iterdir()) if path.is_file()}

    first = model_files()
    keras.backend.clear_session()
    run_stages(train)
    assert {"cifar10.keras", "cifar10.h5", "cifar10.classes.json", "cifar10.info.json"} <= set(first)
    assert model_files() == first

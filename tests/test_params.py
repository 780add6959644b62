"""params.yaml is validated in one place, and every error names the key and the value."""
import pytest

from stages.backbones import BACKBONES
from stages.params import ParamsError, load_params, parse_params
from tests.conftest import REPO, TINY, merged, repo_params, run_module, write_params


def parse(changes: dict):
    return parse_params(merged(merged(repo_params(), TINY), changes))


def test_the_shipped_params_are_valid_and_typed():
    params = load_params(REPO / "params.yaml")
    assert params.model.backbone == "densenet121"
    assert params.data.image_size == 224 and params.train.epochs == 10 and params.train.batch_size == 32
    assert isinstance(params.train.learning_rate, float)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"model": {"backbone": "densnet121"}}, "model.backbone: 'densnet121' is not one of densenet121, vgg16"),
        ({"model": {"backbone": "densnet121"}}, "did you mean 'densenet121'"),
        ({"data": {"image_size": 16}}, "data.image_size: 16 is below the minimum 32"),
        ({"data": {"val_size": 395}}, "data.val_size: 395 leaves fewer than 10"),
        ({"data": {"val_size": 5}}, "data.val_size: 5 is below the minimum 10"),
        ({"data": {"limit": 5}}, "data.limit: 5 is below the minimum 20"),
        ({"data": {"source": "imagenet"}}, "data.source: 'imagenet' is not one of cifar10, synthetic"),
        ({"data": {"verify": "yes"}}, "data.verify: 'yes' is not true or false"),
        ({"train": {"epochs": 0}}, "train.epochs: 0 is below the minimum 1"),
        ({"train": {"epochs": 2.5}}, "train.epochs: 2.5 is not an integer"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate: -1.0 must be a positive number"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown key (did you mean 'epochs'?)"),
        ({"model": {"weights": "missing.weights.h5"}}, "model.weights: 'missing.weights.h5' is not imagenet, none"),
        ({"extract": {"enabled": 1}}, "extract.enabled: 1 is not true or false"),
        ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
    ],
)
def test_bad_values_name_the_key(changes, expected):
    with pytest.raises(ParamsError) as error:
        parse(changes)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_the_backbone_error_lists_every_valid_backbone():
    with pytest.raises(ParamsError) as error:
        parse({"model": {"backbone": "alexnet"}})
    assert all(name in str(error.value) for name in BACKBONES)


def test_a_missing_key_is_named():
    raw = merged(repo_params(), TINY)
    del raw["train"]["seed"]
    with pytest.raises(ParamsError, match=r"train\.seed: missing"):
        parse_params(raw)


def test_yaml_exponents_without_a_dot_are_numbers():
    assert parse({"train": {"learning_rate": "1e-4"}}).train.learning_rate == pytest.approx(1e-4)


def test_a_weights_file_that_exists_is_accepted(tmp_path):
    weights = tmp_path / "backbone.weights.h5"
    weights.write_bytes(b"")
    assert parse({"model": {"weights": str(weights)}}).model.weights == str(weights)


def test_params_are_frozen():
    params = parse({})
    with pytest.raises(AttributeError):
        params.train.epochs = 3


def test_a_stage_reports_bad_params_in_one_line_and_fails(tmp_path):
    write_params(tmp_path, {"model": {"backbone": "densnet121"}})
    result = run_module("stages.extract", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.backbone: 'densnet121' is not one of")
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")

"""params.yaml is validated in one place, and every error names the key and the value."""
import re

import pytest
import yaml

from stages import prepare
from stages.lib.backbones import BACKBONES
from stages.lib.params import (ENGINES, HEADS, OFFLINE_RUN, PRECISIONS, SOURCES, ParamsError, load_params,
                               parse_params)
from tests.helpers import REPO, TINY, merged, repo_params, run_module, write_params


def parse(changes: dict):
    return parse_params(merged(merged(repo_params(), TINY), changes))


def test_the_shipped_params_load_and_the_readme_documents_every_key():
    load_params(REPO / "params.yaml")
    readme = (REPO / "README.md").read_text()
    undocumented = [f"{section}.{key}" for section, values in repo_params().items() for key in values
                    if f"`{section}.{key}`" not in readme]
    assert not undocumented, undocumented


def test_the_offline_run_on_the_readmes_first_screen_sets_valid_params():
    """The command a failed download prints is the README's, and its settings pass validation."""
    first_screen = (REPO / "README.md").read_text().split("\n## Read the results")[0]
    assert OFFLINE_RUN in first_screen
    changes = {}
    for setting in re.findall(r"-S (\S+)", OFFLINE_RUN):
        key, value = setting.split("=")
        section, name = key.split(".")
        changes.setdefault(section, {})[name] = yaml.safe_load(value)
    params = parse_params(merged(repo_params(), changes))
    assert (params.data.source, params.model.weights, params.data.image_size) == ("synthetic", "none", 64)


@pytest.mark.parametrize("section, key, choices", [
    ("data", "source", SOURCES), ("model", "backbone", tuple(BACKBONES)), ("extract", "engine", ENGINES),
    ("extract", "precision", PRECISIONS), ("train", "head", HEADS)])
def test_the_shipped_params_yaml_lists_every_choice_of_a_key_in_its_comment(section, key, choices):
    """A user picks from the comment beside the key: `a | b (what b does) | c` names exactly the valid values."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    start = lines.index(f"{section}:")
    line = next(line for line in lines[start + 1:] if line.strip().startswith(f"{key}:"))
    listed = [choice.split()[0] for choice in line.split("#", 1)[1].split("|")]
    assert sorted(listed) == sorted(choices), line


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


def test_exponents_without_a_dot_are_numbers_and_quoted_numbers_are_strings(tmp_path):
    params = write_params(tmp_path, {})
    text = (tmp_path / "params.yaml").read_text()
    rate = f"learning_rate: {params['train']['learning_rate']}"
    (tmp_path / "params.yaml").write_text(text.replace(rate, "learning_rate: 1e-4"))
    assert load_params(tmp_path / "params.yaml").train.learning_rate == pytest.approx(1e-4)  # as DVC reads it
    for quoted in ('"1e-4"', '"  1_0 "'):
        (tmp_path / "params.yaml").write_text(text.replace(rate, f"learning_rate: {quoted}"))
        with pytest.raises(ParamsError, match=r"^train\.learning_rate: .* is not a number$"):
            load_params(tmp_path / "params.yaml")


def test_a_key_given_twice_is_refused_naming_it(tmp_path):
    write_params(tmp_path, {"train": {"epochs": 2}})
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 5\n"))
    with pytest.raises(ParamsError, match=r"^train\.epochs: given twice in .*params.yaml \(lines \d+ and \d+\); keep"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("key, value, message", [
    ("data.seed", -1, "data.seed: -1 is below the minimum 0"),
    ("train.seed", 2**32, f"train.seed: {2**32} is above the maximum {2**32 - 1}"),
    ("extract.batch_size", 100_000_000, "extract.batch_size: 100000000 is above the maximum 1024"),
    ("model.head_units", 10**10, "model.head_units: 10000000000 is above the maximum 8192"),
    ("data.image_size", 100_000, "data.image_size: 100000 is above the maximum 1024"),
])
def test_values_out_of_range_are_named(key, value, message):
    section, name = key.split(".")
    with pytest.raises(ParamsError) as error:
        parse({section: {name: value}})
    assert str(error.value) == message


def test_unfrozen_layers_without_epochs_to_train_them_are_refused():
    with pytest.raises(ParamsError, match=r"^train\.fine_tune_epochs: 0 leaves the 1 layers that .* set it to 1"):
        parse({"train": {"fine_tune_layers": 1, "fine_tune_epochs": 0}})


def test_a_weights_file_under_weights_is_accepted_and_one_elsewhere_is_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    for path in (tmp_path / "weights/backbone.weights.h5", tmp_path / "backbone.weights.h5"):
        path.write_bytes(b"")
    assert parse({"model": {"weights": "weights/backbone.weights.h5"}}).model.weights == "weights/backbone.weights.h5"
    with pytest.raises(ParamsError, match=r"model.weights: '.*backbone.weights.h5' is outside weights/; move it"):
        parse({"model": {"weights": str(tmp_path / "backbone.weights.h5")}})


def test_a_stage_reports_bad_params_in_one_line_and_fails(tmp_path):
    write_params(tmp_path, {"model": {"backbone": "densnet121"}})
    result = run_module("stages.extract", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.backbone: 'densnet121' is not one of")
    assert "Traceback" not in result.stderr


def test_a_stage_run_outside_the_project_names_the_folder_and_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        prepare.main()
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (f"error: no params.yaml in {tmp_path}; run the command in the "
                                               f"project's folder, where dvc.yaml and params.yaml are")
    assert list(tmp_path.iterdir()) == []


def test_invalid_yaml_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def params_with(tmp_path, old: str, new: str):
    """The tiny params.yaml with one line's text replaced, as a user would edit it."""
    write_params(tmp_path, {})
    text = (tmp_path / "params.yaml").read_text()
    assert old in text
    (tmp_path / "params.yaml").write_text(text.replace(old, new, 1))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("old, new, key, read", [
    ("seed: 42", "seed: 042", "data.seed", 42),  # YAML 1.1 reads a leading zero as octal: 34
    ("seed: 42", "seed: 010", "data.seed", 10),
    ("verify: true", "verify: no", "data.verify", "no"),  # YAML 1.1: false
    ("epochs: 5", "epochs: 1:30", "train.epochs", "1:30"),  # YAML 1.1: 90, base 60
])
def test_params_yaml_is_read_as_dvc_reads_it(tmp_path, old, new, key, read):
    from dvc.utils.serialize import load_yaml  # what `dvc status` and `dvc params diff` compare

    path = params_with(tmp_path, old, new)
    section, name = key.split(".")
    assert load_yaml(str(path))[section][name] == read
    if isinstance(read, int):
        assert getattr(getattr(load_params(path), section), name) == read
    else:
        with pytest.raises(ParamsError, match=rf"^{key}: '{read}' is not "):
            load_params(path)


@pytest.mark.parametrize("case", ["nested", "control character", "not utf-8", "huge integer", "huge file"])
def test_a_damaged_params_file_is_one_line_naming_it(tmp_path, case):
    write_params(tmp_path, {})
    path = tmp_path / "params.yaml"
    text = path.read_text()
    damaged = {
        "nested": text.replace("limit: 400", "limit: " + "[" * 400 + "]" * 400).encode(),
        "control character": text.replace("seed: 42", "seed: 42  # \x01").encode(),
        "not utf-8": text.encode().replace(b"seed: 42", b"seed: 42  # \xff"),
        "huge integer": text.replace("seed: 42", "seed: " + "9" * 5001).encode(),
        "huge file": text.encode() + b"".join(b"unknown_%d: 1\n" % i for i in range(200_000)),
    }[case]
    path.write_bytes(damaged)
    with pytest.raises(ParamsError) as error:
        load_params(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and len(message.splitlines()) == 1 and len(message) < 300, message

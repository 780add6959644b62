"""The README's commands, for real: dvc repro, metrics show, params diff, status, in a fresh repository."""
import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import ABOVE_CHANCE, REPO, dvc, dvc_env, stage_code

pytestmark = pytest.mark.slow


def edit_params(repo, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def changed_stages(repo) -> set[str]:
    return set(json.loads(dvc(repo, "status", "--json")))


def test_dvc_repro_end_to_end(reproduced_repo, reproduced):
    said = (reproduced.parent / "repro.log").read_text()
    # TensorFlow's C++ start-up lines (I0000 ..., E0000 ... failed call to cuInit) and Keras's warning at each
    # .h5 save: nothing a user on a CPU can act on.
    noise = [line for line in said.splitlines() if re.match(r"[IWE]\d{4} |WARNING: All log messages|absl:", line)]
    assert noise == [], "\n".join(noise)
    assert "train: saved models/cifar10.keras" in said
    metrics = json.loads(dvc(reproduced_repo, "metrics", "show", "--json"))
    accuracy = metrics[""]["data"]["metrics/metrics.json"]["data"]["accuracy"]
    assert accuracy > ABOVE_CHANCE, f"synthetic test accuracy {accuracy}, chance is 0.1"
    extraction = metrics[""]["data"]["metrics/timing/extract.json"]["data"]["extract"]
    assert extraction["images"] == 800 and extraction["images_per_second"] > 0, extraction  # train, val and test
    assert metrics[""]["data"]["metrics/timing/train.json"]["data"]["head_seconds"] > 0
    assert "accuracy" in dvc(reproduced_repo, "metrics", "show")

    assert "Stage 'prepare' didn't change" in (second := dvc(reproduced_repo, "repro"))
    assert "Running stage" not in second
    assert changed_stages(reproduced_repo) == set()

    edit_params(reproduced_repo, "model", "backbone", "vgg16")
    diff = dvc(reproduced_repo, "params", "diff")
    assert "model.backbone" in diff and "densenet121" in diff and "vgg16" in diff
    assert {"extract", "train"} <= changed_stages(reproduced_repo) and "prepare" not in changed_stages(reproduced_repo)

    edit_params(reproduced_repo, "model", "backbone", "densenet121")
    edit_params(reproduced_repo, "train", "epochs", 2)
    # check reads every param, in under a second; evaluate follows through train's outputs
    assert changed_stages(reproduced_repo) == {"check", "train"}

    edit_params(reproduced_repo, "train", "fine_tune_layers", 5)
    assert changed_stages(reproduced_repo) == {"check", "train"}  # evaluate learns from train's outputs what to read

    plots = json.loads(dvc(reproduced_repo, "plots", "show", "--json"))
    assert "errors" not in plots, plots["errors"]
    assert {"loss", "accuracy", "confusion", "confusion_normalized", "per_class_f1"} <= set(plots["data"])
    for chart in ("loss", "accuracy"):  # training and validation on one chart
        series = plots["data"][chart][0]["content"]["data"]["values"]
        assert {row["filename"] for row in series} == {f"train/{chart}.tsv", f"validation/{chart}.tsv"}, chart
        assert len(series) == 2 * 5, chart  # five epochs of each
    for chart in ("confusion", "confusion_normalized"):  # actual classes down the side, as in the PNG
        encoding = plots["data"][chart][0]["content"]["spec"]["encoding"]
        assert (encoding["x"]["field"], encoding["y"]["field"]) == ("predicted", "actual"), chart


def test_an_earlier_runs_outputs_come_back_from_dvcs_run_cache_without_running_it(reproduced_repo):
    """What makes an experiment back on params already run take seconds: DVC restores the stages' outputs."""
    def outputs():  # not the stages' lock files, which no stage declares
        return {path: digest for path, digest in stage_outputs(reproduced_repo).items() if not path.endswith(".lock")}

    before = outputs()
    for name in ("models", "metrics"):
        shutil.rmtree(reproduced_repo / name)
    restored = dvc(reproduced_repo, "repro")
    assert "Stage 'train' is cached - skipping run" in restored, restored
    assert "Stage 'evaluate' is cached - skipping run" in restored, restored
    assert outputs() == before


def test_a_changed_file_reruns_exactly_the_stages_that_run_it(reproduced_repo):
    for shared in ("stages/lib/cache.py", "stages/lib/models.py"):
        with open(reproduced_repo / shared, "a") as code:
            code.write("\n")
        runs_it = {name for name, (_, run) in stage_code().items() if shared in run}
        # A stage downstream of one that reruns is listed by its changed dependencies only after that rerun.
        assert changed_stages(reproduced_repo) == runs_it, shared
        dvc(reproduced_repo, "commit", "--force")

    (reproduced_repo / "weights/backbone.weights.h5").write_bytes(b"new weights")
    assert changed_stages(reproduced_repo) == {"extract", "train"}


def test_a_value_yaml_versions_read_differently_is_one_value_to_dvc_and_the_stages(reproduced_repo):
    """`seed: 042` is 42 to DVC (YAML 1.2) and must be to the stages too: nothing changed, nothing reruns."""
    params = reproduced_repo / "params.yaml"
    params.write_text(params.read_text().replace("  seed: 42\n", "  seed: 042\n", 1))
    assert changed_stages(reproduced_repo) == set()
    probe = "from stages.lib.params import load_params; print(load_params().data.seed)"
    shown = subprocess.run([sys.executable, "-c", probe], cwd=reproduced_repo, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(reproduced_repo)})
    assert shown.stdout.strip() == "42", shown.stderr


def stage_outputs(repo) -> dict[str, str]:
    return {path.relative_to(repo).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in ("data/prepared", "data/features", "models", "metrics")
            for path in sorted((repo / folder).rglob("*")) if path.is_file()}


def failed_dvc(repo, *args: str) -> list[str]:
    """A dvc command that must fail; the lines its stages printed as errors."""
    result = subprocess.run(["dvc", *args], cwd=repo, env=dvc_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]


def test_a_bad_param_fails_before_dvc_removes_any_stages_outputs(reproduced_repo):
    """DVC removes a stage's outputs before running it: the check stage runs first and stops the pipeline."""
    before = stage_outputs(reproduced_repo)
    errors = failed_dvc(reproduced_repo, "exp", "run", "-S", "train.learning_rate=-1")
    assert stage_outputs(reproduced_repo) == before, "train's outputs were removed"
    assert len(errors) == 1 and errors[0].startswith("error: train.learning_rate: "), errors

    edit_params(reproduced_repo, "train", "learning_rate", 0.001)
    edit_params(reproduced_repo, "extract", "batch_size", 0)
    errors = failed_dvc(reproduced_repo, "repro")
    assert stage_outputs(reproduced_repo) == before, "extract's outputs were removed"
    assert len(errors) == 1 and errors[0].startswith("error: extract.batch_size: "), errors


def readme_command(starts_with: str) -> list[str]:
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(starts_with))
    return shlex.split(line, comments=True)


EXPERIMENT_COLUMNS = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}


def figure_columns(repo, *options: str) -> list[str]:
    """`dvc exp show --csv`'s columns of metrics, params and files, in order (--only-changed may drop "parent")."""
    header = next(csv.reader(dvc(repo, "exp", "show", "--csv", *options).splitlines()))
    return [column for column in header if column not in EXPERIMENT_COLUMNS]


def test_dvc_exp_show_leads_with_test_accuracy_and_the_readmes_command_shows_no_file_hashes(reproduced_repo):
    assert figure_columns(reproduced_repo)[:2] == ["accuracy", "loss"]
    # The reproduced workspace against a commit without outputs: every file column differs, and so is shown
    # by --only-changed unless the README's command drops it.
    workspace = json.loads(dvc(reproduced_repo, "exp", "show", "--json"))[0]["data"]
    options = readme_command("dvc exp show")[3:]
    shown = figure_columns(reproduced_repo, *options)
    assert shown[:2] == ["accuracy", "loss"], shown
    assert not set(workspace["deps"]) & set(shown), shown

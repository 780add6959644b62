"""dvc.yaml's code dependencies are exactly the files each stage runs; params.yaml loads with no ML framework,
and the stages load theirs without extras and log through one handler."""
import ast
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

PACKAGE = "stages"


def imported_modules(path: Path) -> set[str]:
    """The stages.* modules a file imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name).is_file()}


def module_file(module: str) -> Path:
    return REPO / (module.replace(".", "/") + ".py")


def files_run_by(module: str) -> set[str]:
    """Every file of the package that `python -m module` executes: its imports, transitively, and __init__.py."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += imported_modules(module_file(current))
    return {f"{PACKAGE}/__init__.py"} | {module_file(name).relative_to(REPO).as_posix() for name in seen}


def stage_code() -> dict[str, tuple[set[str], set[str]]]:
    """Per stage in dvc.yaml: the code files it declares, and the ones its command runs."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    result = {}
    for name, stage in stages.items():
        module = stage["cmd"].removeprefix("python -m ")
        declared = {dep for dep in stage["deps"] if dep.endswith(".py")}
        result[name] = declared, files_run_by(module)
    return result


def test_each_stage_declares_exactly_the_code_it_runs():
    mismatches = {name: {"undeclared": sorted(run - declared), "not run": sorted(declared - run)}
                  for name, (declared, run) in stage_code().items() if declared != run}
    assert not mismatches, mismatches


def test_the_dependency_walk_follows_imports_of_the_package():
    assert {"stages/__init__.py", "stages/params.py", "stages/params_checks.py", "stages/params_file.py",
            "stages/paths.py", "stages/backbones.py"} <= files_run_by("stages.params")
    assert "stages/models.py" in files_run_by("stages.extract")


def test_reading_params_imports_no_ml_framework():
    probe = ("import sys; from stages.params import load_params; load_params(); "
             "print(sorted(m for m in ('tensorflow', 'keras', 'sklearn', 'openvino') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_model_stages_load_keras_without_its_optional_extras_and_evaluate_without_scikit_learn():
    probe = ("import sys; import stages.extract, stages.train; from stages.frameworks import OPTIONAL_EXTRAS; "
             "print(sorted(m for m in OPTIONAL_EXTRAS if m in sys.modules)); "
             "import stages.evaluate; print('sklearn' in sys.modules); "
             "import matplotlib.pyplot, sklearn.metrics; print('importable')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False", "importable"]


def test_a_tensorflow_warning_is_printed_once():
    probe = ("from stages.cli import run_stage; from stages.frameworks import tf; "
             "run_stage(lambda params: tf.get_logger().warning('said once'))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "said once" in line] == ["tensorflow: said once"]

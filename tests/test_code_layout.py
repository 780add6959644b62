"""The house as a newcomer reads it: stages/ holds the commands, stages/lib/ the library they are built from,
imports only go down, and dvc.yaml's code dependencies are exactly the files each stage runs. Reading
params.yaml loads no ML framework, and the stages load theirs without extras and log through one handler."""
import ast
import subprocess
import sys

import pytest

from tests.helpers import PACKAGE, REPO, files_run_by, imported_modules, module_file, stage_code

LIBRARY = "stages.lib"
MAX_LINES = 200
COMMANDS = sorted(path.stem for path in (REPO / PACKAGE).glob("*.py") if path.stem != "__init__")
LIBRARY_MODULES = sorted(f"{LIBRARY}.{path.stem}" for path in (REPO / "stages/lib").glob("*.py")
                         if path.stem != "__init__")


def test_each_stage_declares_exactly_the_code_it_runs():
    mismatches = {name: {"undeclared": sorted(run - declared), "not run": sorted(declared - run)}
                  for name, (declared, run) in stage_code().items() if declared != run}
    assert not mismatches, mismatches


def test_the_dependency_walk_follows_imports_of_the_package():
    assert {"stages/__init__.py", "stages/lib/__init__.py", "stages/lib/params.py", "stages/lib/params_checks.py",
            "stages/lib/params_file.py", "stages/lib/paths.py", "stages/lib/backbones.py"} <= files_run_by(
        "stages.lib.params")
    assert "stages/lib/models.py" in files_run_by("stages.extract")
    assert "stages/train.py" not in files_run_by("stages.extract")


def test_stages_holds_the_commands_and_each_has_a_main():
    assert {"prepare", "extract", "train", "evaluate", "predict", "export", "compare"} <= set(COMMANDS)
    for command in COMMANDS:
        tree = ast.parse(module_file(f"{PACKAGE}.{command}").read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert "main" in functions, command
        assert any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body), command
    assert len(LIBRARY_MODULES) >= 10


@pytest.mark.parametrize("module", [f"{PACKAGE}.{command}" for command in COMMANDS] + LIBRARY_MODULES)
def test_imports_only_go_down_to_the_library(module):
    """A command imports the library, never another command; the library never imports a command."""
    upward = {name for name in imported_modules(module_file(module))
              if name != module and not name.startswith(f"{LIBRARY}.") and name not in (PACKAGE, LIBRARY)}
    assert not upward, f"{module} imports {sorted(upward)}"


def test_the_library_has_no_import_circle():
    imports = {module: {name for name in imported_modules(module_file(module)) if name in LIBRARY_MODULES}
               for module in LIBRARY_MODULES}
    finished, path = set(), []

    def visit(module: str) -> None:
        assert module not in path, f"import circle: {' -> '.join(path[path.index(module):] + [module])}"
        if module in finished:
            return
        path.append(module)
        for imported in sorted(imports[module]):
            visit(imported)
        path.pop()
        finished.add(module)

    for module in LIBRARY_MODULES:
        visit(module)


def test_no_module_is_longer_than_a_few_screens():
    files = [*(REPO / PACKAGE).rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    long = {path.relative_to(REPO).as_posix(): lines for path in files
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("code", ["from stages.lib.params import load_params; load_params()", "import stages.prepare"])
def test_reading_params_and_prepare_import_no_ml_framework_nor_scikit_learn(code):
    probe = (f"import sys; {code}; print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'sklearn', 'scipy', 'ray', "
             f"'openvino', 'dvclive') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_model_stages_load_keras_without_its_optional_extras_and_evaluate_without_scikit_learn():
    probe = ("import sys; import stages.lib.features, stages.train; from stages.lib.frameworks import OPTIONAL_EXTRAS; "
             "print(sorted(m for m in OPTIONAL_EXTRAS if m in sys.modules)); "
             "import stages.evaluate; print('sklearn' in sys.modules); "
             "import matplotlib.pyplot, sklearn.metrics; print('importable')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False", "importable"]


def test_a_tensorflow_warning_is_printed_once():
    probe = ("from stages.lib.errors import run_stage; from stages.lib.frameworks import tf; "
             "run_stage(lambda params: tf.get_logger().warning('said once'))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "said once" in line] == ["tensorflow: said once"]

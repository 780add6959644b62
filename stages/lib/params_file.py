"""params.yaml read as plain data, safely: YAML 1.2 numbers as DVC reads them, no aliases, no key given twice.

Errors are ParamsError, which names the key or the line at fault.
"""
import re
from pathlib import Path

import yaml

from stages.lib.quoting import shown


class ParamsError(ValueError):
    """A value in params.yaml that cannot work; the message names the key."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with DVC's reading of numbers (YAML 1.2: 1e-3 is a number, as `dvc exp run -S`
    writes it) and no aliases: nine lines of nested aliases expand to a billion values."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            alias = self.peek_event()
            raise ParamsError(f"line {alias.start_mark.line + 1}: YAML aliases (*{shown(alias.anchor)[1:-1]}) are "
                              f"not supported in params.yaml; write the value out")
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def _refuse_duplicate_keys(node: yaml.Node, path: Path, key: str = "") -> None:
    """DVC refuses a params.yaml that gives a key twice; the stages must not quietly take the last."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = f"{key}.{key_node.value}" if key else str(key_node.value)
            if name in lines:
                raise ParamsError(f"{shown(name)[1:-1]}: given twice in {path} (lines {lines[name]} and "
                                  f"{key_node.start_mark.line + 1}); keep one")
            lines[name] = key_node.start_mark.line + 1
            _refuse_duplicate_keys(value_node, path, name)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path, key)


def read_yaml(path: Path):
    """params.yaml as plain data, or ParamsError naming the file."""
    if not Path(path).is_file():
        raise ParamsError(f"no {path} in {Path.cwd()}; run the command in the project's folder, where dvc.yaml and "
                          f"{Path(path).name} are")
    loader = _Loader(Path(path).read_text())
    try:
        try:
            node = loader.get_single_node()
        except ParamsError as error:
            raise ParamsError(f"{path}: {error}") from None
        if node is None:
            return None
        _refuse_duplicate_keys(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from error
    finally:
        loader.dispose()

"""params.yaml read as plain data, exactly as DVC reads it (ruamel.yaml's safe loader, YAML 1.2: `010` is
10, `no` and `1:30` are text), so what `dvc status` compares is what the stages run. Refused before
loading: a file larger than any params file, YAML aliases, nesting deeper than the sections need, and a
key given twice. Errors are ParamsError, one line naming the file, and the key or the line at fault.
"""
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, MappingStartEvent, ScalarEvent

from stages.lib.quoting import shown

MAX_BYTES = 64 * 1024  # the shipped params.yaml is about 2 KB
MAX_DEPTH = 8  # sections, keys, and a list of numbers are three levels


class ParamsError(ValueError):
    """A value in params.yaml that cannot work; the message names the key."""


class _KeyTwice(Exception):
    """DVC refuses a params.yaml that gives a key twice; the stages must not quietly take the last."""

    def __init__(self, key: str, first_line: int, second_line: int):
        super().__init__(key, first_line, second_line)
        self.key, self.lines = key, (first_line, second_line)


class _Level:
    """Where the event walk is: a mapping (whose keys and values alternate) or a sequence."""

    def __init__(self, is_mapping: bool, key: str):
        self.is_mapping, self.key, self.awaiting_key, self.lines = is_mapping, key, True, {}

    def take(self, event) -> str:
        """The dotted key of the node `event` starts: a mapping's key names its next value."""
        if not self.is_mapping:
            return self.key
        if self.awaiting_key:
            self.awaiting_key = False
            name = f"{self.key}.{event.value}" if self.key else str(getattr(event, "value", "?"))
            line = event.start_mark.line + 1
            if name in self.lines:
                raise _KeyTwice(name, self.lines[name], line)
            self.lines[name], self.last = line, name
            return name
        self.awaiting_key = True
        return self.last


def _check_structure(events) -> None:
    """Aliases, depth and repeated keys, from the parser's events: nothing is built before they pass."""
    levels: list[_Level] = []
    for event in events:
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise ParamsError(f"line {line}: YAML aliases (*{shown(event.anchor)[1:-1]}) are not supported in "
                              f"params.yaml; write the value out")
        if isinstance(event, (ScalarEvent, CollectionStartEvent)):
            key = levels[-1].take(event) if levels else ""
            if isinstance(event, CollectionStartEvent):
                if len(levels) == MAX_DEPTH:
                    raise ParamsError(f"line {line}: nested more than {MAX_DEPTH} levels deep; params.yaml holds "
                                      f"sections of keys")
                levels.append(_Level(isinstance(event, MappingStartEvent), key))
        elif isinstance(event, CollectionEndEvent):
            levels.pop()


def read_yaml(path: Path):
    """params.yaml as plain data, or ParamsError naming the file."""
    path = Path(path)
    if not path.is_file():
        where = f"{shown(path)} is not a regular file" if path.exists() else f"no {shown(path)} in {Path.cwd()}"
        raise ParamsError(f"{where}; run the command in the project's folder, where dvc.yaml and {path.name} are")
    if (size := path.stat().st_size) > MAX_BYTES:
        raise ParamsError(f"{shown(path)}: {size:,} bytes, more than the {MAX_BYTES:,} a params file may have")
    try:
        text = path.read_bytes().decode("utf-8")
        yaml = YAML(typ="safe")
        _check_structure(yaml.parse(text))
        return yaml.load(text)
    except UnicodeDecodeError as error:
        raise ParamsError(f"{shown(path)}: byte {error.start} is not UTF-8 text; save the file as UTF-8") from None
    except _KeyTwice as twice:
        raise ParamsError(f"{shown(twice.key)[1:-1]}: given twice in {shown(path)} (lines {twice.lines[0]} and "
                          f"{twice.lines[1]}); keep one") from None
    except ParamsError as error:
        raise ParamsError(f"{shown(path)}: {error}") from None
    except YAMLError as error:
        where = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        at = f"line {where.line + 1}: " if where else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ParamsError(f"{shown(path)}: not valid YAML ({at}{shown(problem)[1:-1]})") from None
    except ValueError as error:  # e.g. an integer of thousands of digits
        raise ParamsError(f"{shown(path)}: {shown(error)}") from None

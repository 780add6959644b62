"""The checks params.py builds its validation from; each names the key at fault and what would work."""
import difflib
import typing
from dataclasses import fields
from pathlib import Path

from stages.lib.params_file import ParamsError
from stages.lib.quoting import shown


def unknown_key(key: str, known: list[str]) -> str:
    key = key if len(key) <= 80 else key[:77] + "..."
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: unknown key{hint}; known keys are {', '.join(known)}"


def check_type(key: str, value, expected) -> object:
    if typing.get_origin(expected) is tuple:  # a non-empty list of one type, kept as a tuple
        if not isinstance(value, list) or not value:
            raise ParamsError(f"{key}: {shown(value)} is not a non-empty list")
        item_type = typing.get_args(expected)[0]
        return tuple(check_type(f"{key}[{index}]", item, item_type) for index, item in enumerate(value))
    allowed = typing.get_args(expected) or (expected,)
    if value is None and type(None) in allowed:
        return value
    if isinstance(value, bool) != (bool in allowed):
        raise ParamsError(f"{key}: {shown(value)} is not {type_names(allowed)}")
    if float in allowed and isinstance(value, int):
        return float(value)
    if not isinstance(value, tuple(t for t in allowed if t is not type(None))):
        raise ParamsError(f"{key}: {shown(value)} is not {type_names(allowed)}")
    return value


def type_names(allowed) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    return " or ".join(names[t] for t in allowed)


def section(name: str, cls, raw) -> object:
    if raw is None:
        raise ParamsError(f"{name}: missing section; add it to params.yaml")
    if not isinstance(raw, dict):
        raise ParamsError(f"{name}: expected a mapping of keys, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    known = [field.name for field in fields(cls)]
    for key in raw:
        if key not in known:
            raise ParamsError(unknown_key(f"{name}.{key}", known))
    missing = [key for key in known if key not in raw]
    if missing:
        raise ParamsError(f"{name}.{missing[0]}: missing; add it to params.yaml")
    return cls(**{key: check_type(f"{name}.{key}", raw[key], hints[key]) for key in known})


def at_least(key: str, value, minimum, why: str = "") -> None:
    if value < minimum:
        raise ParamsError(f"{key}: {shown(value)} is below the minimum {minimum}{why}")


def in_range(key: str, value, minimum, maximum, why: str = "") -> None:
    at_least(key, value, minimum, why)
    if value > maximum:
        raise ParamsError(f"{key}: {shown(value)} is above the maximum {maximum}")


def one_of(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ParamsError(f"{key}: {shown(value)} is not one of {', '.join(allowed)}")


def is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (ValueError, OSError):  # a NUL byte, or a name too long for the file system
        return False


def is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except (ValueError, OSError):
        return False

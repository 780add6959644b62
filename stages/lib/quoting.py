"""Any value made safe to put in a message: cut short, and unable to forge a line of a log."""
import reprlib
from pathlib import PurePath

TEXT_LIMIT = 240  # characters of a path or an error's text; the end (a file's name) is kept

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxdict = 4
_short.maxlevel = 2


def shown(value, quoted: bool = True) -> str:
    """`value` as a message quotes it: a path or an error as its plain text (an error's first line), any
    other value as its repr (text in quotes, unless not `quoted`), with control characters escaped and cut
    short, however large the value."""
    if isinstance(value, PurePath) or (isinstance(value, str) and not quoted):
        text = str(value)
    elif isinstance(value, BaseException):
        lines = str(value).strip().splitlines()
        text = lines[0] if lines else type(value).__name__
    else:
        return _short.repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > TEXT_LIMIT:
        half = TEXT_LIMIT // 2
        text = f"{text[:half - 3]}...{text[-half:]}"
    return text

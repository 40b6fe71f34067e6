"""One loader for the files a user writes (spec, cluster profile, command template).

Every problem (unreadable, not UTF-8, a YAML or TOML syntax error, a field that fails its
model) becomes one line naming the file, raised as the caller's UserError subclass.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Type

from .errors import UserError

# pydantic reports union branches and validators in `loc` by type name; they are no field
_TYPE_WORDS = {"float", "int", "str", "bool", "list", "dict", "tuple"}


def read_text(path: Path, error: Type[UserError] = UserError, what: str = "file") -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_data(path: Path, error: Type[UserError] = UserError, what: str = "file") -> Any:
    """The data of a YAML file (TOML for a .toml suffix)."""
    text = read_text(path, error, what)
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise error(f"{path}: TOML syntax error: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{path}: YAML syntax error{where}: {getattr(e, 'problem', e)}") from None


def _loc(parts: tuple) -> str:
    keep = [str(p) for p in parts if isinstance(p, int) or (
        re.fullmatch(r"[a-z_][a-z0-9_]*", str(p)) and p not in _TYPE_WORDS)]
    return ".".join(keep)


def one_line(e: Any, root: str) -> str:
    """A pydantic ValidationError as `field: message`.

    A union reports one error per branch: the branch whose own check failed (a value error)
    says what is wrong; among the rest the deepest error is the most specific one."""
    err = max(e.errors(), key=lambda x: (x["type"] == "value_error", len(x["loc"])))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{_loc(err['loc']) or root}: {msg}"

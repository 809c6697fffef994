"""One-line config error messages: pydantic errors translated, with did-you-mean.

A validation error becomes ``source:line: key.path: what is wrong``; of several errors the first
in the file is shown (a misspelt key before the "missing" key it causes) with a count of the rest.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from bntrain.errors import ConfigError

from .walk import Choice, annotation_at, keys_of, model_for

if TYPE_CHECKING:
    from .loader import Doc

__all__ = [
    "clip",
    "hint",
    "path_str",
    "show",
    "expected",
    "problem",
    "unknown_key",
    "translate",
    "describe_first",
]


def clip(text: str, limit: int = 60) -> str:
    """Make user text printable on one line and not too long."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def hint(word: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    if not isinstance(word, str):
        return ""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not found:
        found = [c for c in choices if c.lower() == word.lower()]
    return f" (did you mean '{found[0]}'?)" if found else ""


def path_str(path: Sequence[str | int]) -> str:
    """``('model', 'layers', 2, 'units')`` -> ``model.layers[2].units``."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + clip(str(key))
    return out


def show(value: object, raw: str | None = None) -> str:
    """Describe a (wrong) value for a message, preferring its text in the file."""
    if isinstance(value, bool):
        return f"{clip(raw) if raw is not None else str(value).lower()} (a boolean)"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"'{clip(value)}'"
    if isinstance(value, int | float):
        if raw is not None:
            return clip(raw, 40)
        return clip(str(value) if isinstance(value, int) else repr(value), 40)
    return f"a value of type {type(value).__name__}"


def expected(what: str) -> PydanticCustomError:
    """A validator's error: ``must be <what>, got <the value>``."""
    return PydanticCustomError("bntrain_expected", "must be {expected}", {"expected": what})


def problem(message: str, key: str | tuple | None = None) -> PydanticCustomError:
    """A validator's error with its own text (about ``key`` of the mapping, if given).

    ``key`` may be a tuple: a key path below the mapping (``("layers", 2, "input")``).
    """
    ctx: dict[str, Any] = {"text": message}
    if key is not None:
        ctx["key"] = key
    return PydanticCustomError("bntrain_msg", "{text}", ctx)


_TYPE_WORDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _loc(err: dict[str, Any]) -> list[str | int]:
    """pydantic's location of an error, plus the key path a :func:`problem` names."""
    loc = list(err["loc"])
    key = (err.get("ctx") or {}).get("key") if err["type"] == "bntrain_msg" else None
    if key is not None:
        loc.extend(key if isinstance(key, tuple) else (key,))
    return loc


def _normalize_loc(root: type[BaseModel], loc: Sequence[str | int], data: Any) -> list[str | int]:
    """Drop pydantic's union-tag entries from ``loc`` (they are not keys of the data)."""
    out: list[str | int] = []
    after_tag = False
    for i, key in enumerate(loc):
        ann, cur = annotation_at(root, out, data)
        if (
            not after_tag
            and isinstance(ann, Choice)
            and i < len(loc) - 1
            and key == ann.tag_of(cur)
        ):
            after_tag = True  # the next entry is a key of the same mapping
            continue
        after_tag = False
        out.append(key)
    return out


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _tag_message(choice: Choice, value: Any, raw: str | None) -> str:
    """An unknown or unreadable tag (``type: dropot``, ``name: ~``)."""
    tags = ", ".join(choice.tags)
    if choice.noun is not None and isinstance(value, str):
        return (
            f"unknown {choice.noun} '{clip(value)}'{hint(value, choice.tags)}; "
            f"expected one of {tags}"
        )
    return f"must be one of {tags}; got {show(value, raw)}{hint(value, choice.tags)}"


def unknown_key(key: str | int, parent: Any, raw_parent: Any) -> str:
    """``unknown key`` with did-you-mean, and the choices that do take ``key``.

    ``parent`` is the (stripped) annotation of the mapping ``raw_parent`` holding ``key``.
    """
    model = model_for(parent, raw_parent)
    message = f"unknown key{hint(key, list(keys_of(model)) if model else [])}"
    if isinstance(parent, Choice):
        users = parent.users_of(str(key))
        if users:
            tag = parent.tag_of(raw_parent)
            message += f" for {parent.key} '{tag}' (used with {parent.key}: {', '.join(users)})"
    return message


def _describe(
    err: dict[str, Any],
    path: list[str | int],
    data: Any,
    raw: str | None,
    root: type[BaseModel],
) -> str:
    """The message part of one pydantic error (everything after ``key.path: ``)."""
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = show(value, raw)
    if kind == "missing":
        parent, raw_parent = annotation_at(root, path[:-1], data)
        if isinstance(parent, Choice) and len(parent.users_of(str(path[-1]))) < len(parent.tags):
            tag = parent.tag_of(raw_parent)
            return f"missing required key (needed when {parent.key} is '{tag}')"
        return "missing required key"
    if kind == "extra_forbidden":
        return unknown_key(path[-1], *annotation_at(root, path[:-1], data))
    if kind == "bntrain_msg":
        return ctx["text"]
    if kind == "bntrain_expected":
        return f"must be {ctx['expected']}, got {got}"
    if kind in _BOUNDS:
        bound = next(iter(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le")))
        return f"must be {_BOUNDS[kind]} {_number(bound)}, got {got}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {got}{hint(value, choices)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        choice, _ = annotation_at(root, path, data)
        if not isinstance(choice, Choice):
            choice, _ = annotation_at(root, path[:-1], data)
        if not isinstance(value, dict):
            return f"must be a mapping, got {got}"
        if choice.key in value:
            return _tag_message(choice, value[choice.key], raw)
        if path and path[-1] == choice.key:
            return f"missing required key (one of {', '.join(choice.tags)})"
        return f"missing required key '{choice.key}' (one of {', '.join(choice.tags)})"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"must have at least {n} {'entry' if n == 1 else 'entries'}"
    if kind in _TYPE_WORDS:
        message = f"must be {_TYPE_WORDS[kind]}, got {got}"
        if kind == "string_type" and isinstance(value, bool):
            message += "; quote it to use it as a string"
        return message
    return clip(" ".join(str(err.get("msg", "invalid value")).split()), 120)


def _where_tag(err: dict[str, Any], path: list[str | int], root: type[BaseModel], data: Any):
    """For a union error: the path of the tag key (``...type``) when the message is about it."""
    value = err.get("input")
    choice, _ = annotation_at(root, path, data)
    if not isinstance(choice, Choice) or not isinstance(value, dict):
        return path
    if choice.key in value or choice.noun is None:
        return [*path, choice.key]
    return path


def translate(
    exc: ValidationError,
    data: Any,
    doc: Doc,
    origins: dict[tuple[str | int, ...], str],
    root: type[BaseModel],
) -> ConfigError:
    """Turn pydantic's errors for ``data`` (validated against ``root``) into one ConfigError.

    ``doc`` gives each key path's line; ``origins`` maps key paths set by ``--set`` to the
    label that replaces ``source:line`` for errors at or below them.
    """
    found: list[tuple[bool, float, int, str]] = []
    errors = [(err, _normalize_loc(root, _loc(err), data)) for err in exc.errors()]
    # A misspelt key also makes the real key "missing": drop those echoes.
    misspelt = {tuple(p[:-1]) for e, p in errors if e["type"] == "extra_forbidden"}
    errors = [
        (e, p) for e, p in errors if not (e["type"] == "missing" and tuple(p[:-1]) in misspelt)
    ]
    for n, (err, path) in enumerate(errors):
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = _where_tag(err, path, root, data)
        origin = next(((p, o) for p, o in origins.items() if tuple(path[: len(p)]) == p), None)
        raw = doc.texts.get(tuple(path)) if origin is None else None
        message = _describe(err, path, data, raw, root)
        key = clip(path_str(path), 100)
        body = f"{key}: {message}" if key else message
        missing = err["type"] == "missing"  # usually caused by a misspelt key: report that first
        if origin is not None:
            if tuple(path) == origin[0]:
                body = message
            found.append((missing, -1, n, f"{origin[1]}: {body}"))
            continue
        line = None
        for cut in range(len(path), 0, -1):
            line = doc.lines.get(tuple(path[:cut]))
            if line is not None:
                break
        where = doc.source if line is None else f"{doc.source}:{line}"
        found.append((missing, math.inf if line is None else line, n, f"{where}: {body}"))
    found.sort()
    message = found[0][3]
    if len(found) > 1:
        more = len(found) - 1
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(message)


def describe_first(
    exc: ValidationError, data: Any, root: type[BaseModel]
) -> tuple[list[str | int], str]:
    """Key path and message of the first of pydantic's errors for ``data`` (no file lines)."""
    err = exc.errors()[0]
    path = _normalize_loc(root, _loc(err), data)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = _where_tag(err, path, root, data)
    return path, _describe(err, path, data, None, root)

"""The strict YAML reader (and the writer that matches it).

Reading composes nodes with PyYAML's safe loader and builds plain data itself: no tags (so no
object is ever constructed), YAML 1.2 numbers (``1e-3`` is a float, ``010`` is ten, no
timestamps), duplicate keys refused, merge keys (``<<``) and anchors allowed, and the line of
every key recorded so that messages can say ``file.yaml:14``.  Writing quotes every string the
reader would take for something else, so that what :func:`dump_yaml` writes reads back equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import yaml

from bntrain.errors import ConfigError

from .messages import clip, path_str

__all__ = ["MAX_BYTES", "Doc", "load_yaml", "dump_yaml"]

_MAX_NODES = 100_000  # YAML nodes visited (guards against alias bombs)
_MAX_DEPTH = 64  # nesting depth of mappings/lists
MAX_BYTES = 16 * 1024 * 1024  # size of a config file

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})

_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


def _resolvers_12(base: type) -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    """PyYAML's implicit resolvers with YAML 1.2 core ints/floats and no timestamps."""
    table = {
        first: [(tag, rx) for tag, rx in entries if tag not in (_INT, _FLOAT, _TAG + "timestamp")]
        for first, entries in base.yaml_implicit_resolvers.items()
    }
    for tag, rx, firsts in (
        (_INT, _INT_RE, "-+0123456789"),
        (_FLOAT, _FLOAT_RE, "-+0123456789."),
    ):
        for ch in firsts:
            table.setdefault(ch, []).append((tag, rx))
    return table


class _Loader(yaml.SafeLoader):
    """Safe loader used only to compose nodes; scalars are resolved the YAML 1.2 way."""


_Loader.yaml_implicit_resolvers = _resolvers_12(yaml.SafeLoader)


class _Dumper(yaml.SafeDumper):
    """Safe dumper that quotes every string :class:`_Loader` would read as something else."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_Dumper.yaml_implicit_resolvers = _resolvers_12(yaml.SafeDumper)


class _FlowDict(dict):
    pass


class _FlowList(list):
    pass


_Dumper.add_representer(
    _FlowDict, lambda d, data: d.represent_mapping(_MAP, data.items(), flow_style=True)
)
_Dumper.add_representer(_FlowList, lambda d, data: d.represent_sequence(_SEQ, data, True))


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _bad_tag(tag: str) -> str:
    return f"YAML tag '{clip(_tag_name(tag))}' is not allowed"


class Doc:
    """The result of loading: plain data plus where each key path came from."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple[str | int, ...], int] = {}
        self.texts: dict[tuple[str | int, ...], str] = {}
        self.nodes = 0

    def fail(self, line: int | None, path: Sequence[str | int], message: str) -> ConfigError:
        where = self.source if line is None else f"{self.source}:{line}"
        key = clip(path_str(path), 100)
        return ConfigError(f"{where}: {key}: {message}" if key else f"{where}: {message}")

    def scalar(self, node: yaml.ScalarNode, path: tuple[str | int, ...]) -> Any:
        text = node.value
        line = node.start_mark.line + 1
        tag = node.tag
        try:
            if tag == _STR:
                return text
            if tag == _NULL:
                return None
            if tag == _BOOL:
                value = yaml.constructor.SafeConstructor.bool_values.get(text.lower())
                if value is None:
                    raise ValueError
                return value
            if tag == _INT:
                body = text.strip()
                sign = -1 if body.startswith("-") else 1
                body = body.lstrip("+-")
                if body[:2] in ("0x", "0X"):
                    return sign * int(body[2:], 16)
                if body[:2] in ("0o", "0O"):
                    return sign * int(body[2:], 8)
                return sign * int(body, 10)
            if tag == _FLOAT:
                low = text.strip().lower()
                if low in (".inf", "+.inf"):
                    return math.inf
                if low == "-.inf":
                    return -math.inf
                if low == ".nan":
                    return math.nan
                return float(low)
        except ValueError as exc:
            if "digits" in str(exc):  # int('9' * 5000): Python's conversion limit
                raise self.fail(line, path, "number too large") from None
            raise self.fail(line, path, f"cannot read '{clip(text)}' as {_tag_name(tag)}") from None
        raise self.fail(line, path, _bad_tag(tag))

    def build(self, node: yaml.Node, path: tuple[str | int, ...], depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise self.fail(None, (), f"the config is too large (more than {_MAX_NODES} values)")
        line = node.start_mark.line + 1
        if depth > _MAX_DEPTH:
            raise self.fail(line, path, f"nested too deeply (more than {_MAX_DEPTH} levels)")
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, path)
            self.texts.setdefault(path, node.value)
            return value
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                raise self.fail(line, path, _bad_tag(node.tag))
            items = []
            for i, item in enumerate(node.value):
                self.lines.setdefault(path + (i,), item.start_mark.line + 1)
                items.append(self.build(item, path + (i,), depth + 1))
            return items
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self.fail(line, path, _bad_tag(node.tag))
            return self.mapping(node, path, depth)
        raise self.fail(line, path, "unsupported YAML node")  # pragma: no cover

    def mapping(self, node: yaml.MappingNode, path: tuple[str | int, ...], depth: int) -> dict:
        result: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kline = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:  # `<<: *defaults`
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                for src in sources:
                    value = self.build(src, path, depth + 1)
                    if not isinstance(value, dict):
                        raise self.fail(kline, path, "'<<' must merge a mapping")
                    for k, v in value.items():
                        merged.setdefault(k, v)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(kline, path, "mapping keys must be plain names")
            if key_node.tag not in _SCALAR_TAGS:
                raise self.fail(kline, path, _bad_tag(key_node.tag))
            key = key_node.value
            if key in result:
                where = f"in {path_str(path)}" if path else "at the top level"
                raise ConfigError(f"{self.source}:{kline}: duplicate key '{clip(key)}' {where}")
            self.lines[path + (key,)] = kline
            result[key] = self.build(value_node, path + (key,), depth + 1)
        for k, v in merged.items():
            result.setdefault(k, v)
        return result


def _line_of(text: str, position: int) -> int:
    return text.count("\n", 0, max(position, 0)) + 1


def load_yaml(text: str, source: str) -> tuple[Any, Doc]:
    """Parse one YAML document safely into plain data; every failure is a ConfigError."""
    doc = Doc(source)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            return None, doc
        return doc.build(node, ()), doc
    except yaml.reader.ReaderError as exc:
        char = exc.character
        code = ord(char) if isinstance(char, str) else int(char)
        line = _line_of(text, exc.position)
        raise ConfigError(
            f"{source}:{line}: not a text config: character U+{code:04X} is not allowed in YAML"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        parts = [exc.context] if exc.context and not exc.context.startswith("while") else []
        parts.append(exc.problem or "syntax error")
        problem = " ".join(" ".join(str(p) for p in parts).split())
        raise ConfigError(f"{where}: invalid YAML: {clip(problem, 120)}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - other PyYAML failures
        raise ConfigError(
            f"{source}: invalid YAML: {clip(' '.join(str(exc).split()), 120)}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: the config is nested too deeply") from None


def _is_scalar(obj: Any) -> bool:
    return obj is None or isinstance(obj, bool | int | float | str)


def _styled(obj: Any, in_list: bool = False, top: bool = True) -> Any:
    """Flow style (``{a: 1}``, ``[1, 2]``) for list entries, small leaf mappings, scalar lists."""
    if isinstance(obj, dict):
        items = {k: _styled(v, top=False) for k, v in obj.items()}
        flat = all(_is_scalar(v) or isinstance(v, _FlowList) for v in items.values())
        return _FlowDict(items) if flat and not top and (in_list or len(items) <= 5) else items
    if isinstance(obj, list):
        if all(_is_scalar(v) for v in obj):
            return _FlowList(obj)
        return [_styled(v, in_list=True, top=False) for v in obj]
    return obj


def dump_yaml(data: dict) -> str:
    """YAML text of plain data, in the layout of the shipped configs; :func:`load_yaml` reads it back equal."""
    return yaml.dump(_styled(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

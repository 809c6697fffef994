"""``model.layers`` + ``model.blocks`` -> the network graph: named nodes and their inputs.

Block entries are expanded here: each copy of a template gets its ``${parameters}``
substituted, is validated like any layer entry, and its layers are named
``<block entry name>.block<k>.<template layer name>``.  Input names are then resolved (a
layer may only take input from layers above it) and every layer must lead to the output.
Every problem is a :func:`~bntrain.config.messages.problem` with the key path (below
``model``) of the entry to fix, so that messages carry the config's ``file:line``.

Examples
--------
>>> from bntrain.config import parse_config
>>> cfg = parse_config('''
... data: {train: {builtin: digits, split: train}}
... model:
...   blocks:
...     res: [{type: dense, units: '${n}'}, {type: add, input: [dense1, in]}]
...   layers:
...   - {type: dense, units: 8, name: stem}
...   - {type: block, use: res, repeat: 2, with: {n: 8}}
...   - {type: dense, units: 10, nonlinearity: softmax}
... training: {epochs: 1, batch_size: 8, optimizer: {name: sgd, lr: 0.1}}
... ''')
>>> [(n.name, n.inputs) for n in cfg.model.graph()][1:4]
[('stage1.block1.dense1', ('stem',)), ('stage1.block1.add1', ('stage1.block1.dense1', 'stem')), ('stage1.block2.dense1', ('stage1.block1.add1',))]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .fields import Section
from .layers import LayerSpec, LayerSpecBase
from .messages import clip, describe_first, hint, path_str, problem

__all__ = ["INPUT", "BLOCK_INPUT", "Node", "expand"]

#: The network input's name (``input: input`` takes the examples themselves).
INPUT = "input"
#: Inside a block template, the name of the block copy's input.
BLOCK_INPUT = "in"

_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Node:
    """One layer entry of the expanded graph.

    Attributes
    ----------
    name : str
        Its unique name (generated names of block copies are dotted).
    spec : LayerSpecBase
        The validated entry (template parameters substituted).
    inputs : tuple of str
        Names of its inputs, in order; ``"input"`` is the network input.
    path : tuple
        Key path below ``model`` of the entry in the file (``("layers", 3)`` or
        ``("blocks", "basic", 1)``).
    where : str
        The entry for messages: ``model.layers[3]`` or ``model.blocks.basic[1] (in stage2.block1)``.
    """

    name: str
    spec: LayerSpecBase
    inputs: tuple[str, ...]
    path: tuple
    where: str


class _Entry(Section):
    entry: LayerSpec


@dataclass
class _Raw:
    """A node before its inputs are resolved."""

    name: str
    spec: LayerSpecBase
    refs: list[str] | None  # None: the entry before it
    scope: dict[str, str] | None  # its block copy's names: local -> global (None: top level)
    default: str  # global name of the entry before it
    path: tuple
    where: str
    ref_path: tuple  # key path of its `input:` for messages


def _refs(spec: LayerSpecBase) -> list[str] | None:
    value = spec.input
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _substitute(value: Any, params: dict[str, Any], used: set[str], missing: list[str]) -> Any:
    """``value`` with ``${name}`` replaced: a whole-string reference keeps the value's type."""
    if isinstance(value, dict):
        return {k: _substitute(v, params, used, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, used, missing) for v in value]
    if not isinstance(value, str):
        return value
    for name in _PARAM.findall(value):
        used.add(name)
        if name not in params:
            missing.append(name)
    if missing:
        return value
    whole = _PARAM.fullmatch(value)
    if whole:
        return params[whole.group(1)]
    return _PARAM.sub(lambda m: str(params[m.group(1)]), value)


def _param_names(value: Any) -> set[str]:
    found: set[str] = set()
    _substitute(value, {}, found, [])
    return found


def _auto_name(spec: LayerSpecBase, counts: dict[str, int]) -> str:
    base = spec.name_prefix or spec.type
    counts[base] = counts.get(base, 0) + 1
    return spec.name or f"{base}{counts[base]}"


def _template_nodes(
    model: Any, i: int, block: Any, prefix: str, first_input: str, taken: set[str]
) -> list[_Raw]:
    """The nodes of ``block.repeat`` copies of the template the block entry ``i`` uses."""
    templates: dict[str, list] = model.blocks
    if block.use not in templates:
        known = ", ".join(templates) or "none"
        raise problem(
            f"unknown block '{clip(block.use)}'{hint(block.use, list(templates))}; "
            f"model.blocks defines: {known}",
            key=("layers", i, "use"),
        )
    template = templates[block.use]
    wanted = set().union(*(_param_names(e) for e in template)) if template else set()
    for key in block.with_:
        if key not in wanted:
            have = ", ".join(sorted(wanted)) or "none"
            raise problem(
                f"block '{block.use}' has no parameter '{clip(key)}'"
                f"{hint(key, sorted(wanted))} (its parameters: {have})",
                key=("layers", i, "with", key),
            )
    out: list[_Raw] = []
    block_in = first_input
    for k in range(1, block.repeat + 1):
        copy = f"{prefix}.block{k}"
        counts: dict[str, int] = {}
        scope = {BLOCK_INPUT: block_in}
        default = block_in
        for j, raw in enumerate(template):
            tpath = ("blocks", block.use, j)
            missing: list[str] = []
            entry = _substitute(raw, block.with_, set(), missing)
            if missing:
                raise problem(
                    f"block '{block.use}' needs parameter '{missing[0]}' (used in "
                    f"model.{path_str(tpath)}); add it to 'with:'",
                    key=("layers", i, "with") if block.with_ else ("layers", i),
                )
            try:
                spec = _Entry.model_validate({"entry": entry}).entry
            except ValidationError as exc:
                loc, message = describe_first(exc, {"entry": entry}, _Entry)
                raise problem(
                    f"{message} (in {copy}, model.layers[{i}])", key=(*tpath, *loc[1:])
                ) from None
            if spec.type == "block":
                raise problem("a block template cannot hold a block", key=(*tpath, "type"))
            local = _auto_name(spec, counts)
            if local == BLOCK_INPUT or local in scope:
                why = "is the block's input" if local == BLOCK_INPUT else "is used twice"
                raise problem(f"layer name '{local}' {why}; rename it", key=(*tpath, "name"))
            name = f"{copy}.{local}"
            if name in taken:
                raise problem(f"layer name '{name}' is used twice", key=("layers", i, "name"))
            taken.add(name)
            scope[local] = name
            where = f"model.{path_str(tpath)} (in {copy})"
            out.append(
                _Raw(name, spec, _refs(spec), scope, default, tpath, where, (*tpath, "input"))
            )
            default = name
        block_in = default
    return out


def _collect(model: Any) -> tuple[list[_Raw], dict[str, str]]:
    """Every node in file order, and the global name each block entry's name stands for."""
    nodes: list[_Raw] = []
    aliases: dict[str, str] = {}
    taken = {INPUT}
    counts: dict[str, int] = {}
    default = INPUT
    for i, spec in enumerate(model.layers):
        name = _auto_name(spec, counts)
        if name in taken or name in aliases:
            raise problem(
                f"layer name '{clip(name)}' is used twice; names must be unique (and not "
                f"'{INPUT}')",
                key=("layers", i, "name"),
            )
        if spec.type == "block":
            refs = _refs(spec)
            if refs is not None and len(refs) != 1:
                raise problem("a block takes one input", key=("layers", i, "input"))
            first = refs[0] if refs else default
            if first != default:
                first = _resolve_top(first, nodes, aliases, taken, i)
            copies = _template_nodes(model, i, spec, name, first, taken)
            if not copies:
                raise problem(f"block '{spec.use}' has no layers", key=("layers", i, "use"))
            nodes.extend(copies)
            aliases[name] = copies[-1].name
            default = copies[-1].name
            continue
        taken.add(name)
        where = f"model.layers[{i}]"
        path = ("layers", i)
        nodes.append(_Raw(name, spec, _refs(spec), None, default, path, where, (*path, "input")))
        default = name
    return nodes, aliases


def _resolve_top(ref: str, nodes: list[_Raw], aliases: dict, taken: set, i: int) -> str:
    """A block entry's input, named at the top level (it must be defined above it)."""
    ref = aliases.get(ref, ref)
    if ref == INPUT or any(n.name == ref for n in nodes):
        return ref
    raise problem(_unknown(ref, taken | set(aliases)), key=("layers", i, "input"))


def _unknown(ref: str, names: set[str] | list[str]) -> str:
    return f"unknown layer '{clip(ref)}'{hint(ref, sorted(names))} in input"


def _cycle(start: int, target: int, edges: list[list[int]], names: list[str]) -> list[str] | None:
    """Names along a path from ``target`` back to ``start`` through inputs, if there is one."""
    stack = [(target, [target])]
    seen = set()
    while stack:
        node, trail = stack.pop()
        if node == start:
            return [names[n] for n in [start, *trail]]
        if node in seen:
            continue
        seen.add(node)
        stack.extend((up, [*trail, up]) for up in edges[node] if up >= 0)
    return None


def expand(model: Any) -> list[Node]:
    """The graph of ``model`` (a :class:`~bntrain.config.schema.ModelConfig`), in file order.

    Raises
    ------
    pydantic_core.PydanticCustomError
        (via :func:`~bntrain.config.messages.problem`) For an unknown block or parameter,
        a missing parameter, a bad template entry, an unknown, later or cyclic input name,
        a duplicate name, or a layer that does not lead to the output.
    """
    raws, aliases = _collect(model)
    index = {r.name: k for k, r in enumerate(raws)}
    index[INPUT] = -1
    names = [r.name for r in raws]
    # resolve every reference to an index (forward ones too, to tell a cycle from a typo)
    resolved: list[list[int]] = []
    for r in raws:
        refs = r.refs if r.refs is not None else [r.default]
        out = []
        for ref in refs:
            if r.scope is not None and r.refs is not None:
                if ref not in r.scope:
                    raise problem(
                        f"unknown layer '{clip(ref)}'{hint(ref, list(r.scope))} in input: inside "
                        f"a block, inputs name layers of the same block or '{BLOCK_INPUT}' "
                        f"(its input): {', '.join(r.scope)}",
                        key=r.ref_path,
                    )
                ref = r.scope[ref]
            else:
                ref = aliases.get(ref, ref)
            if ref not in index:
                raise problem(_unknown(ref, set(index) | set(aliases)), key=r.ref_path)
            out.append(index[ref])
        resolved.append(out)
    for k, r in enumerate(raws):
        if not r.spec.merge and len(resolved[k]) != 1:
            raise problem(
                f"a {r.spec.type} layer takes one input, got {len(resolved[k])}; "
                f"use an add or concat layer to join layers",
                key=r.ref_path,
            )
        for t in resolved[k]:
            if t >= k:
                loop = _cycle(k, t, resolved, names) if t != k else [r.name, r.name]
                if loop:
                    raise problem(
                        f"the inputs form a cycle: {' <- '.join(loop)}; a layer can only take "
                        f"input from layers above it",
                        key=r.ref_path,
                    )
                raise problem(
                    f"'{names[t]}' is defined later ({raws[t].where}); a layer can only take "
                    f"input from layers above it",
                    key=r.ref_path,
                )
    _check_used(raws, resolved)
    return [
        Node(
            r.name,
            r.spec,
            tuple(names[t] if t >= 0 else INPUT for t in resolved[k]),
            r.path,
            r.where,
        )
        for k, r in enumerate(raws)
    ]


def _check_used(raws: list[_Raw], resolved: list[list[int]]) -> None:
    """Every layer must lead to the output (the last one); otherwise it would never train."""
    used = {len(raws) - 1}
    for k in range(len(raws) - 1, -1, -1):
        if k in used:
            used.update(t for t in resolved[k] if t >= 0)
    for k, r in enumerate(raws):
        if k not in used:
            raise problem(
                f"layer '{r.name}' does not lead to the output (the last layer); give it as "
                f"the input of a later layer or remove it",
                key=r.path,
            )

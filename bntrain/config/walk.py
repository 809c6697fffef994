"""Walking the schema: which model validates the value at a key path.

Did-you-mean messages, ``--set`` and error locations need to know, for a key path in the raw
(not yet validated) mapping, which pydantic model checks the mapping there.  Most sections are
one model; a :class:`Choice` (layers, optimizers, schedules) is a union of models told apart by
one key of the raw mapping (``type`` or ``name``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Discriminator, Tag

__all__ = [
    "ANY",
    "keys_of",
    "Choice",
    "tagged_union",
    "strip",
    "model_for",
    "child",
    "annotation_at",
]

ANY = object()  # "anything goes below here"


def keys_of(model: type[BaseModel]) -> dict[str, Any]:
    """The keys a config writes for ``model``'s fields (the alias where a field has one)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


@dataclass(frozen=True, eq=False)
class Choice:
    """A union of section models selected by the value of one key.

    Attributes
    ----------
    key : str
        The selecting key (``type`` for layers, ``name`` for optimizers and schedules).
    members : dict
        Key value (the tag) -> model class.
    default : str or None
        The tag used when the key is absent (``None``: the key is required).
    noun : str or None
        Names the tag in messages (``unknown layer type 'x'``); ``None`` words an unknown tag
        like any other choice (``must be one of a, b; got 'x'``).
    """

    key: str
    members: dict[str, type[BaseModel]]
    default: str | None = None
    noun: str | None = None

    @property
    def tags(self) -> tuple[str, ...]:
        """The allowed values of :attr:`key`, in declaration order."""
        return tuple(self.members)

    def tag_of(self, value: Any) -> str | None:
        """The tag of a raw mapping or a model instance (None if absent or not a string)."""
        if isinstance(value, dict):
            tag = value.get(self.key, self.default)
        elif isinstance(value, BaseModel):
            tag = getattr(value, self.key, None)
        else:
            return None
        return tag if isinstance(tag, str) else None

    def model_for(self, raw: Any) -> type[BaseModel] | None:
        """The member that validates ``raw`` (None if its tag is missing or unknown)."""
        tag = self.tag_of(raw)
        return None if tag is None else self.members.get(tag)

    def users_of(self, key: str) -> list[str]:
        """Tags whose model has the field ``key``."""
        return [tag for tag, model in self.members.items() if key in keys_of(model)]


def tagged_union(
    key: str,
    classes: Iterable[type[BaseModel]],
    default: str | None = None,
    noun: str | None = None,
) -> Any:
    """The annotation of a field holding one of ``classes``, selected by ``key``.

    Each class declares ``key`` as a one-value ``Literal``; that value is its tag.
    """
    members = {typing.get_args(cls.model_fields[key].annotation)[0]: cls for cls in classes}
    choice = Choice(key, members, default, noun)
    union = typing.Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in members.items())]  # noqa: UP007
    return Annotated[union, Discriminator(choice.tag_of), choice]


def _field_annotation(model: type[BaseModel], key: Any) -> Any:
    field = keys_of(model).get(key) if isinstance(key, str) else None
    if field is None:
        return ANY
    for meta in field.metadata:  # pydantic moves a field's own Annotated metadata here
        if isinstance(meta, Choice):
            return meta
    return field.annotation


def strip(ann: Any) -> Any:
    """Unwrap ``Annotated`` and ``X | None``: a :class:`Choice`, a model class or a type."""
    while True:
        if isinstance(ann, Choice):
            return ann
        if typing.get_origin(ann) is Annotated:
            args = typing.get_args(ann)
            found = next((m for m in args[1:] if isinstance(m, Choice)), None)
            if found is not None:
                return found
            ann = args[0]
            continue
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(members) == 1:
                ann = members[0]
                continue
        return ann


def model_for(ann: Any, raw: Any) -> type[BaseModel] | None:
    """The model a raw value is validated against, or None if not a model."""
    ann = strip(ann)
    if isinstance(ann, Choice):
        return ann.model_for(raw)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


def child(ann: Any, raw: Any, key: str | int) -> Any:
    """Annotation of ``raw[key]`` given the annotation of ``raw`` (:data:`ANY` if unknown)."""
    model = model_for(ann, raw)
    if model is not None:
        return _field_annotation(model, key)
    ann = strip(ann)
    if typing.get_origin(ann) is list and isinstance(key, int):
        return typing.get_args(ann)[0]
    return ANY


def annotation_at(root: type[BaseModel], path: Sequence[str | int], data: Any) -> tuple[Any, Any]:
    """The stripped annotation at ``path`` and the raw value there (None where absent)."""
    ann: Any = root
    cur = data
    for key in path:
        ann = child(ann, cur, key)
        if ann is ANY:
            return ANY, None
        try:
            cur = cur[key]
        except (KeyError, IndexError, TypeError):
            cur = None
    return strip(ann), cur

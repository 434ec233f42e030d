"""The one checker every section of params.yaml goes through.

A section declares what each of its keys accepts as data, a :class:`Knob` per key: its kind(s),
whether null is allowed, its range. A frozen dataclass declares it on its fields, with the kind
taken from the annotation and the range from :func:`ranged` (``lr: float = ranged(1e-3, gt=0)``);
a plain table maps each key to a :class:`Knob` (``"n_test": Knob("int", 360, ge=1)``).
:func:`check` reads either one and answers every bad key in one vocabulary:

* ``<where>.<key>: unknown key; known keys: a, b, c``
* ``<where>.<key>: missing; it has no default``
* ``<where>.<key>: expected an integer, got 'x'`` (``... or null`` where null is allowed)
* ``<where>.<key> = -1: must be >= 1`` (``must lie in (0, 1]``, ``must be one of a, b``, ...)

This module needs neither yaml, torch nor the rest of the lab: the schedule registry, the tasks
and the params.yaml reader all import it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import KW_ONLY, dataclass
from typing import Any

from adaptive_lr.errors import ParamsError


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_list(v: Any, item) -> bool:
    return isinstance(v, (list, tuple)) and all(map(item, v))


# kind -> (what the messages call it, the test a value of that kind passes)
KINDS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", _is_int),
    "float": ("a number", _is_number),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "ints": ("a list of integers", lambda v: _is_list(v, _is_int)),
    "floats": ("a list of numbers", lambda v: _is_list(v, _is_number)),
    "strs": ("a list of strings", lambda v: _is_list(v, lambda s: isinstance(s, str))),
    # one value, or the bounds of a uniform draw
    "span": ("a number or [low, high]", lambda v: _is_number(v) or (_is_list(v, _is_number) and len(v) == 2)),
    "mapping": ("a mapping", lambda v: isinstance(v, dict)),
}
# the kind of each annotation a settings dataclass uses
_ANNOTATIONS = {
    int: "int",
    float: "float",
    bool: "bool",
    str: "str",
    dict: "mapping",
    tuple[int, ...]: "ints",
    tuple[float, ...]: "floats",
}


@dataclass(frozen=True)
class Knob:
    """What one key accepts. Bounds apply to a number, to every number of a list, and to both ends of a span.

    Args:
        kind: a name in :data:`KINDS`, or a tuple of them (any one will do); in a dataclass
            field, left empty: the annotation says it.
        default: the value when the key is absent (null allows null).
        null: null is allowed as well (also when the default is null, or the annotation says ``| None``).
        required: the key must be given (its default is only a placeholder).
        ge, gt, le, lt: bounds (>=, >, <=, <); a float must also be finite.
        choices: the only values allowed.
        min_items: a list holds at least this many values.
        distinct: a list holds no value twice.
        hint: appended to every message about the key, in parentheses.
    """

    kind: str | tuple[str, ...] = ""
    default: Any = None
    _: KW_ONLY
    null: bool = False
    required: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple = ()
    min_items: int = 0
    distinct: bool = False
    hint: str = ""

    @property
    def kinds(self) -> tuple[str, ...]:
        return (self.kind,) if isinstance(self.kind, str) else tuple(self.kind)

    @property
    def nullable(self) -> bool:
        return self.null or self.default is None

    def expected(self) -> str:
        """What the messages say this key expects: ``an integer or null``."""
        return " or ".join([KINDS[k][0] for k in self.kinds] + (["null"] if self.nullable else []))

    def bounds(self) -> str:
        """The range as the messages say it: ``>= 1``, ``(0, 1]``, or "" without bounds."""
        low = (self.ge, "[") if self.ge is not None else (self.gt, "(") if self.gt is not None else None
        high = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        if low and high:
            return f"in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
        if low:
            return f"{'>=' if low[1] == '[' else '>'} {_number(low[0])}"
        if high:
            return f"{'<=' if high[1] == ']' else '<'} {_number(high[0])}"
        return ""

    def in_bounds(self, v: float) -> bool:
        return not (
            (self.ge is not None and not v >= self.ge)
            or (self.gt is not None and not v > self.gt)
            or (self.le is not None and not v <= self.le)
            or (self.lt is not None and not v < self.lt)
        )


def _number(x: float) -> str:
    """A bound as a message shows it: an integer in full (4294967296), anything else as ``:g`` (1e-06)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def ranged(default: Any, **rule: Any) -> Any:
    """A dataclass field whose range is data: ``patience: int = ranged(10, ge=1)`` (see :class:`Knob`)."""
    return dataclasses.field(default=default, metadata={"knob": Knob(**rule)})


@functools.cache
def spec_of(cls: type) -> dict[str, Knob]:
    """The :class:`Knob` of every field of a settings dataclass: kind and null from its annotation, range from
    :func:`ranged`."""
    hints = typing.get_type_hints(cls)
    spec = {}
    for f in dataclasses.fields(cls):
        hint, null = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint, null = args[0], len(args) < len(typing.get_args(hint))
        knob = f.metadata.get("knob", Knob())
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        spec[f.name] = dataclasses.replace(
            knob, kind=knob.kind or _ANNOTATIONS[hint], default=default, null=knob.null or null
        )
    return spec


def defaults(spec: dict[str, Knob]) -> dict[str, Any]:
    """The default of every key of ``spec``."""
    return {key: knob.default for key, knob in spec.items()}


def unknown(where: str, known: Any) -> ParamsError:
    """The error of a key ``where`` that is none of ``known``."""
    return ParamsError(f"{where}: unknown key; known keys: {', '.join(known) or 'none'}")


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)


def check_value(where: str, value: Any, knob: Knob) -> Any:
    """``value`` of key ``where`` if ``knob`` accepts it (a float as a float), else ParamsError naming ``where``."""
    hint = f" ({knob.hint})" if knob.hint else ""
    if value is None:
        if knob.nullable:
            return None
    elif any(KINDS[k][1](value) for k in knob.kinds):
        if knob.kinds == ("float",):
            value = float(value)
        elif knob.kinds == ("floats",):
            value = [float(v) for v in value]
        _check_range(where, value, knob, hint)
        return tuple(value) if isinstance(knob.default, tuple) else value
    raise ParamsError(f"{where}: expected {knob.expected()}, got {_shown(value)}{hint}")


def _check_range(where: str, value: Any, knob: Knob, hint: str) -> None:
    def fail(rule: str):
        raise ParamsError(f"{where} = {value!r}: {rule}{hint}")

    many = isinstance(value, (list, tuple))
    numbers = [v for v in (value if many else [value]) if _is_number(v)]
    if not all(map(math.isfinite, numbers)):
        fail(f"{'each value ' if many else ''}must be a finite number")
    if not all(map(knob.in_bounds, numbers)):
        verb = "lie" if knob.bounds().startswith("in") else "be"
        fail(f"{'each value ' if many else ''}must {verb} {knob.bounds()}")
    if knob.choices and value not in knob.choices:
        fail(f"must be one of {', '.join(map(str, knob.choices))}")
    if many and len(value) < knob.min_items:
        fail(f"must list at least {knob.min_items} value{'s' if knob.min_items > 1 else ''}")
    if many and knob.distinct and len(set(value)) != len(value):
        fail("values must be distinct")
    if many and "span" in knob.kinds and len(value) == 2 and _is_list(value, _is_number) and value[0] > value[1]:
        fail("low must not exceed high")


def section(where: str, raw: Any) -> dict:
    """A section of params.yaml: a mapping (null is an empty one), or ParamsError naming ``where``."""
    return {} if raw is None else check_value(where, raw, Knob("mapping", {}))


def check(where: str, raw: Any, spec: dict[str, Knob]) -> dict[str, Any]:
    """The keys of section ``where`` (a mapping; null is an empty one), each checked against its :class:`Knob`.

    Returns the given keys only (floats as floats; a list as a tuple where the default is one):
    the caller lays them over the defaults. ParamsError names the first bad key.
    """
    raw = section(where, raw)
    at = (lambda key: f"{where}.{key}") if where else str  # where "": the top level, a key is named alone
    out = {}
    for key, value in raw.items():
        if key not in spec:
            raise unknown(at(key), spec)
        out[key] = check_value(at(key), value, spec[key])
    for key, knob in spec.items():
        if knob.required and key not in raw:
            raise ParamsError(f"{at(key)}: missing; it has no default")
    return out

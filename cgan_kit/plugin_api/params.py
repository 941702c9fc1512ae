"""Parameters of factories and settings: read from signatures and docstrings, checked against values.

A factory documents itself: its signature gives names, defaults and types; its docstring gives a
one-line summary and, in an ``Args:`` section, one description per parameter. Two annotations
add what a type alone cannot say:

- ``Annotated[float, Range(gt=0)]`` bounds a number;
- ``ref("norm")`` marks a parameter that names another component. In a recipe it is a name
  (``norm = "instance"``) or an inline table (``activation = { type = "leaky_relu", slope = 0.1 }``);
  the factory receives a zero-argument builder that makes a fresh component each call.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Union


@dataclass(frozen=True)
class Range:
    """Bounds for a number: ``ge``/``gt`` below, ``le``/``lt`` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def describe(self) -> str:
        """The bounds as the user reads them: ">= 1, <= 16"."""
        pairs = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return ", ".join(f"{sign} {_bound(bound)}" for sign, bound in pairs if bound is not None)

    def violation(self, value: float) -> str | None:
        if self.ge is not None and not value >= self.ge:
            return f">= {_bound(self.ge)}"
        if self.gt is not None and not value > self.gt:
            return f"> {_bound(self.gt)}"
        if self.le is not None and not value <= self.le:
            return f"<= {_bound(self.le)}"
        if self.lt is not None and not value < self.lt:
            return f"< {_bound(self.lt)}"
        return None


def _bound(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class ComponentRef:
    """Marks a parameter whose value names a component of ``kind``."""

    kind: str


def ref(kind: str) -> Any:
    """Annotation for a parameter that refers to a component of ``kind`` (e.g. ``ref("norm")``)."""
    return Annotated[Callable[[], Any], ComponentRef(kind)]


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Missing()


@dataclass(frozen=True)
class Param:
    """One parameter of a factory or a settings table."""

    name: str
    annotation: Any
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def ref_kind(self) -> str | None:
        for meta in _metadata(self.annotation):
            if isinstance(meta, ComponentRef):
                return meta.kind
        return None

    @property
    def type_name(self) -> str:
        kind = self.ref_kind
        return kind if kind else type_name(self.annotation)

    @property
    def bounds(self) -> str:
        """The value bounds (``Range``) anywhere in the annotation, as text; "" where there are none."""
        pending = [self.annotation]
        while pending:
            annotation = pending.pop()
            for meta in _metadata(annotation):
                if isinstance(meta, Range):
                    return meta.describe()
            pending.extend(typing.get_args(annotation))
        return ""

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Return the value converted to the parameter's type, or an error saying what is wrong."""
        if self.ref_kind:
            # References are checked by the recipe validator, which knows the registry.
            return value, None
        return check_value(value, self.annotation)


def _metadata(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Annotated:
        return annotation.__metadata__
    return ()


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def type_name(annotation: Any) -> str:
    """A short, user-facing name for a type annotation."""
    annotation = _strip(annotation)
    origin = typing.get_origin(annotation)
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))  # as TOML writes them
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = type_name(args[0]) if args else "any"
        return f"list of {inner}"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value:g}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def check_value(value: Any, annotation: Any) -> tuple[Any, str | None]:
    """Check ``value`` (as read from TOML) against ``annotation``; return (converted, error)."""
    bounds = [m for m in _metadata(annotation) if isinstance(m, Range)]
    base = _strip(annotation)
    converted, error = _check_type(value, base)
    if error is None:
        for bound in bounds:
            numbers = converted if isinstance(converted, list) else [converted]
            for number in numbers:
                if isinstance(number, (int, float)) and not isinstance(number, bool):
                    wanted = bound.violation(number)
                    if wanted:
                        return value, f"must be {wanted}, found {_describe(value)}"
    return converted, error


def did_you_mean(word: str, choices: Any) -> str:
    """``'; did you mean "x"?'`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _check_type(value: Any, annotation: Any) -> tuple[Any, str | None]:
    origin = typing.get_origin(annotation)
    wrong = f"expected {type_name(annotation)}, found {_describe(value)}"
    if annotation is inspect.Parameter.empty or annotation is Any:
        return value, None
    if origin is Annotated:
        return check_value(value, annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None, None
        for option in options:
            converted, error = check_value(value, option)
            if error is None:
                return converted, None
        return value, wrong
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value, None
        return value, wrong + (did_you_mean(value, choices) if isinstance(value, str) else "")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return value, wrong
        args = typing.get_args(annotation)
        if origin is tuple and args and Ellipsis not in args:
            if len(value) != len(args):
                return value, f"expected {len(args)} values, found {len(value)}"
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        out = []
        for item, item_type in zip(value, item_types):
            converted, error = check_value(item, item_type)
            if error:
                return value, f"{wrong} ({error})"
            out.append(converted)
        return out, None
    if annotation is type(None):
        return (None, None) if value is None else (value, wrong)
    if annotation is bool:
        return (value, None) if isinstance(value, bool) else (value, wrong)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value, None
        return value, wrong
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
            if math.isnan(number):
                return value, "expected a number, found nan"
            return number, None
        return value, wrong
    if annotation is str:
        return (value, None) if isinstance(value, str) else (value, wrong)
    if annotation is dict:
        return (value, None) if isinstance(value, dict) else (value, wrong)
    return value, None


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^(\s*)(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, str, dict[str, str]]:
    """Split a Google-style docstring into (summary, body, {parameter: description})."""
    text = inspect.cleandoc(doc or "")
    lines = text.splitlines()
    summary = lines[0].strip() if lines else ""
    body_lines: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    indent: int | None = None
    in_args = False
    for line in lines[1:]:
        if _ARGS_HEADER.match(line):
            in_args, current, indent = True, None, None
            continue
        if in_args:
            if line.strip() and not line.startswith(" "):
                in_args = False  # a new section ends the arguments
            else:
                match = _ARG_LINE.match(line)
                if match and (indent is None or len(match.group(1)) <= indent):
                    indent = len(match.group(1))
                    current = match.group(2).lstrip("*")
                    params[current] = match.group(4).strip()
                elif current and line.strip():
                    params[current] = f"{params[current]} {line.strip()}".strip()
                continue
        body_lines.append(line)
    # Paragraphs are joined into single lines so that a terminal wraps them at its own width.
    paragraphs = [" ".join(part.split()) for part in "\n".join(body_lines).split("\n\n")]
    body = "\n\n".join(p for p in paragraphs if p)
    plain = lambda text: text.replace("``", "`")  # noqa: E731  (reST literals read as Markdown ones)
    return plain(summary), plain(body), {name: plain(doc) for name, doc in params.items()}


def params_of(factory: Callable[..., Any], skip: tuple[str, ...] = ()) -> list[Param]:
    """The documented parameters of a factory (or a dataclass), in signature order."""
    signature = inspect.signature(factory)
    # A class's own annotations are its attributes; its parameters' are its constructor's.
    annotated = factory.__init__ if inspect.isclass(factory) and not dataclasses.is_dataclass(factory) else factory
    try:
        hints = typing.get_type_hints(annotated, include_extras=True)
    except Exception:  # annotations that cannot be resolved: fall back to the raw ones
        hints = {}
    _, _, docs = parse_docstring(factory.__doc__)
    params = []
    for name, parameter in signature.parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(name, parameter.annotation)
        default = REQUIRED if parameter.default is parameter.empty else parameter.default
        params.append(Param(name, annotation, default, docs.get(name, "")))
    return params

"""The one sanitizer for text that comes from a cluster, an error or a file.

Control characters (C0 including tab, DEL, C1), bidi controls, line
separators and zero-width characters become visible escapes such as
``\\x1b`` or ``\\u202e``, so nothing from the data can reach
the terminal as a control sequence. Markup is not touched here: the UI never
renders data as markup (it uses ``Text``/``Content``), so ``[bold]`` stays
literal text.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from functools import cache
from typing import Any, TypeVar

_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
# Line/paragraph separators break the layout; zero-width characters make two
# different names look identical on a confirmation screen.
_INVISIBLE = "\u2028\u2029\u200b\u200c\u200d\u2060\ufeff"
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI + _INVISIBLE + "]")

T = TypeVar("T")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: object) -> str:
    """Return ``text`` as a str with every unsafe character made visible."""
    s = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, s)


def is_clean(text: str) -> bool:
    return _UNSAFE.search(text) is None


def _safe(value: str) -> bool:
    # Fast path first: printable ASCII (the common case) needs no regex.
    return (value.isascii() and value.isprintable()) or is_clean(value)


@cache
def _text_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (str fields, tuple-of-str fields) of a dataclass, from its type hints."""
    hints = typing.get_type_hints(cls)
    strs, tuples = [], []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        if hint is str or (str in args and typing.get_origin(hint) is not tuple):
            strs.append(f.name)
        elif typing.get_origin(hint) is tuple and str in args:
            tuples.append(f.name)
    return tuple(strs), tuple(tuples)


def clean_entity(entity: T) -> T:
    """Sanitize every str (and tuple of str) field of a frozen dataclass."""
    strs, tuples = _text_fields(type(entity))
    values = [getattr(entity, name) or "" for name in strs]
    for name in tuples:
        values.extend(getattr(entity, name))
    # One check for the whole entity: the common case. A non-str where text
    # belongs (a loosely typed source) makes join fail: the slow way makes it text.
    try:
        if _safe("".join(values)):
            return entity
    except TypeError:
        pass
    changes: dict[str, Any] = {}
    for name in strs:
        value = getattr(entity, name)
        if value is not None and not (isinstance(value, str) and _safe(value)):
            changes[name] = clean(value)
    for name in tuples:
        value = getattr(entity, name)
        if any(not (isinstance(v, str) and _safe(v)) for v in value):
            changes[name] = tuple(clean(v) for v in value)
    return dataclasses.replace(entity, **changes) if changes else entity  # type: ignore[type-var]


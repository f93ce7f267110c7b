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
import operator
import re
import typing
from collections.abc import Callable
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
        elif any(typing.get_origin(a) is tuple and str in typing.get_args(a) for a in args):
            tuples.append(f.name)  # tuple[str, ...] | None (e.g. VM.independent_disks)
    return tuple(strs), tuple(tuples)


@cache
def _str_getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """One C call that reads every str field of a dataclass, as a tuple."""
    strs, _ = _text_fields(cls)
    if not strs:
        return lambda entity: ()
    if len(strs) == 1:
        name = strs[0]
        return lambda entity: (getattr(entity, name),)
    return operator.attrgetter(*strs)


def clean_entity(entity: T) -> T:
    """Sanitize every str (and tuple of str) field of a frozen dataclass."""
    cls = type(entity)
    strs, tuples = _text_fields(cls)
    # One check for the whole entity: the common case. None and "" are skipped; a
    # non-str where text belongs (a loosely typed source) makes join fail: the slow
    # way below makes it text.
    try:
        text = "".join(filter(None, _str_getter(cls)(entity)))
        for name in tuples:
            text += "".join(getattr(entity, name) or ())  # None: not reported
        if _safe(text):
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
        if value and any(not (isinstance(v, str) and _safe(v)) for v in value):
            changes[name] = tuple(clean(v) for v in value)
    return dataclasses.replace(entity, **changes) if changes else entity  # type: ignore[type-var]


"""The one sanitizer for text that comes from a cluster, an error or a file.

Control characters (C0 except tab, DEL, C1) and bidi controls become visible
escapes such as ``\\x1b`` or ``\\u202e``, so nothing from the data can reach
the terminal as a control sequence. Markup is not touched here: the UI never
renders data as markup (it uses ``Text``/``Content``), so ``[bold]`` stays
literal text.
"""

from __future__ import annotations

import dataclasses
import re
from enum import Enum
from typing import Any, TypeVar

_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f" + _BIDI + "]")

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


def clean_entity(entity: T) -> T:
    """Sanitize every str (and tuple of str) field of a frozen dataclass."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(entity):  # type: ignore[arg-type]
        value = getattr(entity, f.name)
        if isinstance(value, str) and not isinstance(value, Enum) and not is_clean(value):
            changes[f.name] = clean(value)
        elif isinstance(value, tuple) and any(
            isinstance(v, str) and not is_clean(v) for v in value
        ):
            changes[f.name] = tuple(clean(v) if isinstance(v, str) else v for v in value)
    return dataclasses.replace(entity, **changes) if changes else entity  # type: ignore[type-var]


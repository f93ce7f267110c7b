"""Operator-safety wording shared by the screens and the app (issue 12).

What a refused confirmation is logged as, and the one-line reasons a key
that does nothing gives.
"""

from __future__ import annotations

from .fit import cap

#: At most this much of a wrongly typed name goes into the action log.
TYPED_CELLS = 80


def mismatch_reason(typed: str) -> str:
    """The logged reason of a confirmation refused for a wrong name (typed text sanitized)."""
    return (f"refused (name mismatch): typed '{cap(typed, TYPED_CELLS)}', which is not the "
            "target's name; nothing was sent")

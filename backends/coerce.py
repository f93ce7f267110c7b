"""Coercions both backends' mapping modules share (pure functions, no network).

A timestamp in the model is always aware UTC; a missing or unusable one is
:data:`EPOCH`.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def aware_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

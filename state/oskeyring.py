"""The OS keyring, asked with a time limit: the one place Ventana reads it.

Both the backends' passwords (backends/credentials.py) and the team log's
(state/schema.py, state/live.py) come through here, so both follow
RELIABILITY.md, "Credentials":

- only a real backend is used: keyring's fail backend (no keyring, a
  headless server) and null backend, and keyrings.alt's plaintext stores,
  are "no keyring";
- a locked desktop collection can block ``get_password`` on an unlock
  prompt, so every lookup runs in a daemon thread and is abandoned after the
  time limit (the caller goes on as "not stored");
- a lookup still blocked is never started twice: a second ask for the same
  entry waits on the one in flight, so retries (a team log reconnecting with
  backoff, a console reconnecting a host) do not pile up blocked threads.
  Once it answers, the next ask starts a fresh lookup (a changed password is
  seen).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0


def real_keyring() -> bool:
    """Whether a keyring backend that really stores secrets is available."""
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return False
    backend = keyring.get_keyring()
    chained = getattr(backend, "backends", None)
    candidates = list(chained) if chained is not None else [backend]
    usable = [
        b
        for b in candidates
        if not isinstance(b, fail.Keyring | null.Keyring)
        and not type(b).__module__.startswith("keyrings.alt")
    ]
    return bool(usable)


class _Lookup:
    """One ``get_password`` in its own daemon thread."""

    def __init__(self, service: str, username: str) -> None:
        self.key = (service, username)
        self.value: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ventana-keyring", daemon=True)

    def _run(self) -> None:
        try:
            import keyring

            self.value = keyring.get_password(*self.key) or None
        except Exception as exc:  # NoKeyringError, locked collections, D-Bus errors
            log.info("keyring lookup failed: %s", type(exc).__name__)
        finally:
            with _lock:
                if _in_flight.get(self.key) is self:
                    del _in_flight[self.key]
            self.done.set()


_lock = threading.Lock()
_in_flight: dict[tuple[str, str], _Lookup] = {}


def ask(service: str, username: str, timeout: float = TIMEOUT_S) -> str | None:
    """The password stored for ``username`` under ``service``, or None: no real keyring,
    nothing stored (an empty value is "not stored"), a failure, or no answer within
    ``timeout`` seconds."""
    if not real_keyring():
        return None
    with _lock:
        lookup = _in_flight.get((service, username))
        if lookup is None:
            lookup = _in_flight[(service, username)] = _Lookup(service, username)
            lookup.thread.start()
    if not lookup.done.wait(timeout):
        log.warning("the OS keyring did not answer within %.0f s; not using it", timeout)
        return None
    return lookup.value

"""Where passwords come from: the keyring cases RELIABILITY.md lists."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from ventana.backends.credentials import (
    CredentialError,
    find_password,
    from_keyring,
    read_secret_file,
    real_keyring,
)


class Stored(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        return "from-keyring" if (service, username) == ("ventana-test", "CORP\\ops") else None

    def set_password(self, service: str, username: str, password: str) -> None:
        raise NotImplementedError

    def delete_password(self, service: str, username: str) -> None:
        raise NotImplementedError


class Blocking(Stored):
    def get_password(self, service: str, username: str) -> str | None:
        time.sleep(30)  # a locked desktop collection waiting for an unlock prompt
        return "too-late"


@pytest.fixture
def keyring_backend() -> Iterator[None]:
    before = keyring.get_keyring()
    yield
    keyring.set_keyring(before)


def test_fail_and_null_backends_are_not_used(keyring_backend: None) -> None:
    for backend in (fail.Keyring(), null.Keyring()):
        keyring.set_keyring(backend)
        assert not real_keyring()
        assert find_password("CORP\\ops", label="Test", env_var=None,
                             keyring_service="ventana-test", environ={}) is None


def test_a_real_keyring_answers(keyring_backend: None) -> None:
    keyring.set_keyring(Stored())
    assert real_keyring()
    found = find_password("CORP\\ops", label="Test", env_var="X", keyring_service="ventana-test",
                          environ={})
    assert found is not None and found.password == "from-keyring"
    assert "from-keyring" not in repr(found)


@pytest.mark.timeout(10)
def test_a_blocking_keyring_is_abandoned_within_the_limit(keyring_backend: None) -> None:
    keyring.set_keyring(Blocking())
    started = time.monotonic()
    # its own entry: a lookup still in flight is waited on by later asks for the same one
    assert from_keyring("ventana-test", "CORP\\locked", timeout=1.0) is None
    assert time.monotonic() - started < 2.0


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    with pytest.raises(CredentialError, match="chmod 600") as caught:
        read_secret_file(secret, label="Test")
    assert "s3cret" not in str(caught.value)
    os.chmod(secret, 0o600)
    assert read_secret_file(secret, label="Test") == "s3cret"

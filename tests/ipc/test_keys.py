"""The pool's key file: owner-only, atomic, and not trusted when it is anyone else's."""

from __future__ import annotations

import os
import sys

import pytest

import ipc
from ipc import keys


@pytest.fixture
def address(control_address):
    yield control_address
    try:
        os.unlink(keys.key_path(control_address))
    except FileNotFoundError:
        pass


def test_a_key_is_made_fresh_for_each_run_and_read_back(address):
    first = keys.create_key(address)
    assert keys.read_key(address) == first and len(first) == keys.KEY_SIZE
    second = keys.create_key(address)
    assert second != first and keys.read_key(address) == second
    keys.remove_key(address, first)  # not ours any more: left alone
    assert keys.read_key(address) == second
    keys.remove_key(address, second)
    with pytest.raises(ipc.KeyMissingError, match="no supervisor of this user runs"):
        keys.read_key(address)


@pytest.mark.skipif(sys.platform == "win32", reason="file modes are a POSIX matter")
def test_the_key_file_is_owner_only_and_a_loose_one_is_not_trusted(address):
    keys.create_key(address)
    path = keys.key_path(address)
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)  # opened up: somebody else may have read or written it
    with pytest.raises(ipc.KeyMissingError, match="not trusted"):
        keys.read_key(address)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() != 0, reason="needs root to give the file away")
def test_a_key_file_of_another_user_is_not_trusted(address):
    keys.create_key(address)
    os.chown(keys.key_path(address), 65534, 65534)
    with pytest.raises(ipc.KeyMissingError, match="not trusted"):
        keys.read_key(address)


def test_a_short_or_long_file_is_not_a_key(address):
    keys.create_key(address)
    with open(keys.key_path(address), "wb") as f:
        f.write(b"x" * 10)
    with pytest.raises(ipc.KeyMissingError, match="is not a key file"):
        keys.read_key(address)

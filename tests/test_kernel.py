"""amtlib.kernel: the socket prefix's form, folder and length rule (checked against a real Unix socket),
and the manager's transport/ip defaults.

tests/test_newcomer.py already checks that two managers get different absolute prefixes, that a long
folder falls back to the temporary folder, the interrupt skipped at shutdown, and a notebook run; this
file tests the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from amtlib import kernel
from amtlib.kernel import MAX_PREFIX, IPCKernelManager, ipc_prefix

#: Length of ``/amt-kernel-<16 hex>-ipc``.
NAME_LEN = len("/amt-kernel-") + 16 + len("-ipc")


@pytest.fixture()
def short_dir():
    """A folder with a short path (tmp_path can be too long to reach MAX_PREFIX exactly)."""
    d = tempfile.mkdtemp(prefix="k", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d)


def test_prefix_is_folder_slash_amt_kernel_random_hex_ipc(short_dir):
    p = ipc_prefix(str(short_dir))
    assert re.fullmatch(re.escape(str(short_dir)) + r"/amt-kernel-[0-9a-f]{16}-ipc", p)
    assert len({ipc_prefix(str(short_dir)) for _ in range(200)}) == 200


def test_missing_folder_is_created(short_dir):
    folder = short_dir / "runtime" / "nested"
    p = ipc_prefix(str(folder))
    assert os.path.dirname(p) == str(folder) and folder.is_dir()


def test_prefix_of_exactly_max_length_is_kept_one_more_falls_back(short_dir):
    room = MAX_PREFIX - NAME_LEN - len(str(short_dir)) - 1  # -1 for the "/" before the padding
    assert room > 0
    fits, over = short_dir / ("a" * room), short_dir / ("b" * (room + 1))
    kept = ipc_prefix(str(fits))
    assert len(kept) == MAX_PREFIX and kept.startswith(str(fits) + "/")
    moved = ipc_prefix(str(over))
    assert os.path.dirname(moved) == tempfile.gettempdir() and len(moved) <= MAX_PREFIX


def test_the_longest_kept_prefix_still_binds_a_unix_socket(short_dir):
    room = MAX_PREFIX - NAME_LEN - len(str(short_dir)) - 1
    prefix = ipc_prefix(str(short_dir / ("c" * room)))
    path = prefix + "-65535"  # jupyter_client appends "-<port>"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        assert os.path.exists(path)
    finally:
        s.close()
        if os.path.exists(path):
            os.unlink(path)


def test_default_folder_is_the_jupyter_runtime_folder(monkeypatch, short_dir):
    runtime = short_dir / "rt"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    assert os.path.dirname(ipc_prefix()) == str(runtime) and runtime.is_dir()
    km = IPCKernelManager()
    assert km.transport == "ipc" and os.path.dirname(km.ip) == str(runtime)


def test_tcp_manager_listens_on_loopback():
    assert IPCKernelManager(transport="tcp").ip == "127.0.0.1"


def test_windows_keeps_tcp(monkeypatch):
    # only the module's view of ``os`` says Windows; the rest of the process stays POSIX
    monkeypatch.setattr(kernel, "os", SimpleNamespace(name="nt", path=os.path, makedirs=os.makedirs))
    km = IPCKernelManager()
    assert (km.transport, km.ip) == ("tcp", "127.0.0.1")

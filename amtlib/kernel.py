"""The Jupyter kernel ``amt run`` executes notebooks in: local IPC transport instead of TCP.

ipykernel warns on every start that a TCP kernel without CurveZMQ keys sends code and outputs in plain
text. The pipeline's kernels are local children of the runner, so Unix-domain sockets (``ipc``) are both
quieter and private. Each kernel gets its own socket prefix in the Jupyter runtime folder (jupyter_client's
default, ``kernel-ipc-N`` in the working directory, lets two runs started from one folder talk to each
other's kernels: "Invalid Signature"). Windows has no IPC transport and keeps TCP.
"""

from __future__ import annotations

import os
import tempfile
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import default

#: Longest socket prefix used (Unix socket paths are limited to about 107 bytes, "-N" is appended).
MAX_PREFIX = 96


def ipc_prefix(folder: str | None = None) -> str:
    """A fresh socket path prefix ``<folder>/amt-kernel-<random>-ipc`` (Jupyter runtime folder, else the
    system temporary folder when that path would be too long for a Unix socket)."""
    if folder is None:
        from jupyter_core.paths import jupyter_runtime_dir

        folder = jupyter_runtime_dir()
    name = f"amt-kernel-{uuid.uuid4().hex[:16]}-ipc"
    path = os.path.join(folder, name)
    if len(path) > MAX_PREFIX:
        path = os.path.join(tempfile.gettempdir(), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


class IPCKernelManager(AsyncKernelManager):
    """nbclient's default kernel manager with ``transport = "ipc"``, a unique socket prefix (POSIX) and
    no interrupt before the shutdown request."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    @default("ip")
    def _ip_default(self) -> str:
        return ipc_prefix() if self.transport == "ipc" else "127.0.0.1"

    async def _async_interrupt_kernel(self) -> None:
        # jupyter_client sends SIGINT before every shutdown request; the pipeline's kernel has finished
        # its cells by then, and a SIGINT that lands inside a message handler only logs a spurious
        # "KeyboardInterrupt caught in kernel". Interrupts at other times (timeouts) still go through.
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()

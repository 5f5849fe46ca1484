"""The Jupyter kernel ``amt run`` executes notebooks in: local IPC transport instead of TCP.

ipykernel warns on every start that a TCP kernel without CurveZMQ keys sends code and outputs in plain
text. The pipeline's kernels are local children of the runner, so Unix-domain sockets (``ipc``, files
beside the kernel's connection file in the Jupyter runtime folder) are both quieter and private.
Windows has no IPC transport and keeps TCP.
"""

from __future__ import annotations

import os

from jupyter_client.manager import AsyncKernelManager
from traitlets import default


class IPCKernelManager(AsyncKernelManager):
    """nbclient's default kernel manager with ``transport = "ipc"`` on POSIX systems."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

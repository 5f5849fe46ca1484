"""Worker processes that never outlive the command that started them.

Ground layer: imports nothing from amtlib. Every ``--workers N`` of the package (cohort scan and build,
synthesis, radiomics, evaluation, export) runs its cases in :func:`process_pool`. A plain
``ProcessPoolExecutor`` leaves its workers running, adopted by init, when its parent is killed with
``kill -9`` (nothing runs in the parent to stop them); here each worker asks the Linux kernel for
SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and exits at once if the parent is already
gone. Elsewhere (no ``prctl``) the pool is a plain one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any

#: ``prctl`` option: the signal a process receives when its parent thread exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: SIGTERM on the parent's death; exit now if it died before this ran."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: no such call
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def process_pool(workers: int, mp_context: Any = None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that die with this process (module docstring)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=_die_with_parent,
                               initargs=(os.getpid(),))

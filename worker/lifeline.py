"""A worker dies with its supervisor, whatever happens to either.

The control channel closing is the protocol's way: the worker drains and exits. This module
adds the operating system's backstop for a worker whose event loop is stuck and would never
see the channel close. On Linux the worker asks the kernel for ``PR_SET_PDEATHSIG``: SIGKILL
when its parent ends. The request only takes effect from the moment it is made, so a
supervisor that died earlier is caught by comparing the parent's pid. (On Windows the
supervisor puts each worker in a kill-on-close Job Object instead: ``supervisor._winjob``.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def bind_to_parent(parent: int) -> bool:
    """Arrange to die with ``parent``; ``False`` if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if sys.platform != "win32" and parent and os.getppid() != parent:
        return False
    return True

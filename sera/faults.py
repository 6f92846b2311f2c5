"""Named fault points for the fault suite: `SERA_FAULT=<name>` kills the process (SIGKILL, as a
power cut or `kill -9` would) when it reaches `fault_point(<name>)`. Unset, a fault point costs
one dictionary lookup."""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("SERA_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

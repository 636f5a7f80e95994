"""``python -m supervisor`` is the ``supervisor`` command (an embedded interpreter has no scripts)."""

import os
import sys

# `python -m` put the current folder first on the path. A model's `ipc.py` or `worker.py`
# there must not shadow the pool's own packages: look in that folder last, not first.
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from supervisor.cli import main

sys.exit(main())

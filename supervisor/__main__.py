"""``python -m supervisor`` is the ``supervisor`` command (an embedded interpreter has no scripts)."""

import sys

from supervisor.cli import main

sys.exit(main())

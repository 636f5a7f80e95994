"""``python -P -m worker --control ADDRESS --slot N --generation G --parent PID``: started by
the supervisor, not by hand."""

import signal
import sys

# First, before anything slow: a terminal's Ctrl+C reaches every process in its foreground
# group (every process on the console, on Windows), and a service manager's SIGTERM often goes
# to the whole group too. Only the supervisor acts on them; workers drain when the supervisor
# tells them to, over the control channel (and are killed by it as a last resort).
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.platform == "win32":
    signal.signal(signal.SIGBREAK, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closing terminal's, sent to its whole group

# Then die with the supervisor from now on, before the imports that take a second or more (a
# supervisor killed while a hundred workers import numpy must not leave them behind).
from ipc.contract.launch import parent_of  # noqa: E402
from worker.lifeline import bind_to_parent  # noqa: E402

if not bind_to_parent(parent_of(sys.argv)):
    sys.exit(1)  # it is gone already

from worker.main import main  # noqa: E402

sys.exit(main())

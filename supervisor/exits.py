"""The exit codes of the ``supervisor`` command, in one place.

``supervisor start`` ends with 0 (stopped cleanly), 1 (could not start: control address or
port in use, a worker that failed to start), 2 (bad usage), 3 (stopped, but not cleanly: a
request was dropped, a worker had to be killed) or 4 (the pool went down: a worker kept
failing, a crash loop). ``supervisor stop`` reports 0 and 3 the same way; ``reload`` and
``scale`` end with 1 when they failed and 5 when a stop cut them short. Any command ends with
130 when interrupted while it waits (Ctrl+C).
"""

OK = 0
#: An error the message explains.
ERROR = 1
#: Bad usage: a flag, a setting, a value out of bounds.
USAGE = 2
#: The pool stopped, but not cleanly: a request was dropped, a worker had to be killed.
UNCLEAN = 3
#: The pool went down: no worker could start any more (a crash loop), so the supervisor gave up.
DOWN = 4
#: A reload or scale was cut short: the pool began to stop first.
INTERRUPTED_BY_STOP = 5
#: Ctrl+C while a command waits: the shell's convention, 128 + SIGINT.
INTERRUPTED = 130

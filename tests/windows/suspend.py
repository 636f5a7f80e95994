"""``python suspend.py suspend|resume PID``: freeze or thaw a Windows process, as a debugger
does (NtSuspendProcess), to make a hung worker. Run with the Windows interpreter."""

import ctypes
import sys

PROCESS_SUSPEND_RESUME = 0x0800

action, pid = sys.argv[1], int(sys.argv[2])
handle = ctypes.windll.kernel32.OpenProcess(PROCESS_SUSPEND_RESUME, False, pid)
if not handle:
    sys.exit(f"cannot open process {pid}: {ctypes.GetLastError()}")
status = getattr(ctypes.windll.ntdll, "NtSuspendProcess" if action == "suspend" else "NtResumeProcess")(handle)
sys.exit(0 if status == 0 else f"NTSTATUS {status:#x}")

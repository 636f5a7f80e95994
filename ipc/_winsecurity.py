"""Windows security for the control pipe: an owner-only descriptor, and who the user is.

``OwnerOnly`` holds a ``SECURITY_ATTRIBUTES`` whose descriptor grants the current user and
SYSTEM, and nobody else, full access (``D:P``: protected, nothing inherited). ``describe``
reads a handle's owner and DACL back as SDDL, for the tests.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import wintypes

assert sys.platform == "win32"

_advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
_kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

_TOKEN_QUERY = 0x0008
_TOKEN_USER = 1
_SDDL_REVISION_1 = 1
_SE_KERNEL_OBJECT = 6
_OWNER_SECURITY_INFORMATION = 0x1
_DACL_SECURITY_INFORMATION = 0x4

_kernel32.GetCurrentProcess.restype = wintypes.HANDLE
_kernel32.LocalFree.argtypes = (ctypes.c_void_p,)
_kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
_advapi32.OpenProcessToken.argtypes = (wintypes.HANDLE, wintypes.DWORD, ctypes.POINTER(wintypes.HANDLE))
_advapi32.GetTokenInformation.argtypes = (
    wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)
)  # fmt: skip
_advapi32.ConvertSidToStringSidW.argtypes = (ctypes.c_void_p, ctypes.POINTER(wintypes.LPWSTR))
_advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = (
    wintypes.LPCWSTR, wintypes.DWORD, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.ULONG)
)  # fmt: skip
_advapi32.GetSecurityInfo.argtypes = (
    wintypes.HANDLE, ctypes.c_int, wintypes.DWORD,
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
)  # fmt: skip
_advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = (
    ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR), ctypes.POINTER(wintypes.ULONG)
)  # fmt: skip


class _SecurityAttributes(ctypes.Structure):
    _fields_ = [
        ("nLength", wintypes.DWORD),
        ("lpSecurityDescriptor", ctypes.c_void_p),
        ("bInheritHandle", wintypes.BOOL),
    ]


def _check(ok: int) -> None:
    if not ok:
        raise ctypes.WinError(ctypes.get_last_error())


def current_user_sid() -> str:
    """The current user's SID, as ``S-1-5-21-...``."""
    token = wintypes.HANDLE()
    _check(_advapi32.OpenProcessToken(_kernel32.GetCurrentProcess(), _TOKEN_QUERY, ctypes.byref(token)))
    try:
        size = wintypes.DWORD()
        _advapi32.GetTokenInformation(token, _TOKEN_USER, None, 0, ctypes.byref(size))
        buffer = ctypes.create_string_buffer(size.value)
        _check(_advapi32.GetTokenInformation(token, _TOKEN_USER, buffer, size, ctypes.byref(size)))
        sid = ctypes.cast(buffer, ctypes.POINTER(ctypes.c_void_p))[0]  # TOKEN_USER.User.Sid
        text = wintypes.LPWSTR()
        _check(_advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text)))
        try:
            return str(text.value)
        finally:
            _kernel32.LocalFree(text)
    finally:
        _kernel32.CloseHandle(token)


class OwnerOnly:
    """A ``SECURITY_ATTRIBUTES`` for the current user and SYSTEM only, valid while this lives."""

    def __init__(self) -> None:
        sid = current_user_sid()
        self.sddl = f"O:{sid}D:P(A;;GA;;;SY)(A;;GA;;;{sid})"
        descriptor = ctypes.c_void_p()
        _check(
            _advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(
                self.sddl, _SDDL_REVISION_1, ctypes.byref(descriptor), None
            )
        )
        self._descriptor = descriptor
        self._attributes = _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor, False)

    @property
    def address(self) -> int:
        """The ``SECURITY_ATTRIBUTES`` pointer, as ``_winapi.CreateNamedPipe`` takes it."""
        return ctypes.addressof(self._attributes)

    def __del__(self) -> None:
        if self._descriptor:
            _kernel32.LocalFree(self._descriptor)
            self._descriptor = ctypes.c_void_p()


def describe(handle: int) -> str:
    """The owner and DACL of a kernel object's ``handle``, as SDDL."""
    descriptor = ctypes.c_void_p()
    what = _OWNER_SECURITY_INFORMATION | _DACL_SECURITY_INFORMATION
    error = _advapi32.GetSecurityInfo(handle, _SE_KERNEL_OBJECT, what, None, None, None, None, ctypes.byref(descriptor))
    if error:
        raise ctypes.WinError(error)
    try:
        text = wintypes.LPWSTR()
        _check(
            _advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor, _SDDL_REVISION_1, what, ctypes.byref(text), None
            )
        )
        try:
            return str(text.value)
        finally:
            _kernel32.LocalFree(text)
    finally:
        _kernel32.LocalFree(descriptor)

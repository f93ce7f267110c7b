"""The Windows error codes the simulated Hyper-V host fails with, in one place.

A Hyper-V cmdlet that fails ends its message with the HRESULT ("… (0x80070020)").
Each code here carries its name from the Windows SDK's ``winerror.h`` (the
same table golang.org/x/sys mirrors in ``windows/zerrors_windows.go``);
Microsoft describes them on its "System Error Codes" pages
(learn.microsoft.com/windows/win32/debug/system-error-codes). Win32 errors
appear as ``HRESULT_FROM_WIN32`` (``0x8007xxxx``: the low word is the Win32
code); the virtual-disk ones are ``FACILITY_VIRTUALIZATION`` (``0xC03Axxxx``).
``str(code)`` is the form a message shows (``0x80070020``).

The sim's messages are written where they are raised (merge, cleanup,
rebuild, churn) and take their codes from here.

The WinRM test endpoint (``tests/peers/winrm``) deliberately does **not**
import this table: a test peer imitates Windows as Microsoft publishes it
and cites ``winerror.h``, never the product's own beliefs — were both to
share one table, a wrong code here would be agreed on by client-side code
and peer alike, and no test could notice. (One such disagreement with the
header, kept as it was: both use ``0xC03A0017`` for "the parent of a
differencing disk cannot be compacted", but winerror.h names 0xC03A0017
``ERROR_VHD_CHILD_PARENT_SIZE_MISMATCH``; see ``COMPACT_PARENT`` below.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HResult:
    """One Windows error code: its ``winerror.h`` name and value."""

    name: str
    code: int

    def __str__(self) -> str:
        return f"0x{self.code:08X}"


# -- Win32 errors as HRESULTs (HRESULT_FROM_WIN32) -------------------------------------
#: ERROR_FILE_NOT_FOUND (2): "The system cannot find the file specified."
FILE_NOT_FOUND = HResult("ERROR_FILE_NOT_FOUND", 0x80070002)
#: ERROR_ACCESS_DENIED (5): "Access is denied."
ACCESS_DENIED = HResult("ERROR_ACCESS_DENIED", 0x80070005)
#: ERROR_SHARING_VIOLATION (32): "The process cannot access the file because it is
#: being used by another process."
SHARING_VIOLATION = HResult("ERROR_SHARING_VIOLATION", 0x80070020)
#: ERROR_DISK_FULL (112): "There is not enough space on the disk."
DISK_FULL = HResult("ERROR_DISK_FULL", 0x80070070)
#: ERROR_INVALID_STATE (5023): "The group or resource is not in the correct state to
#: perform the requested operation." (a failover-cluster resource)
INVALID_STATE = HResult("ERROR_INVALID_STATE", 0x8007139F)

# -- virtual disks (FACILITY_VIRTUALIZATION) ---------------------------------------------
#: The differencing disk's parent cannot be found (a broken chain).
VHD_PARENT_VHD_NOT_FOUND = HResult("ERROR_VHD_PARENT_VHD_NOT_FOUND", 0xC03A000D)
#: The identifiers of the parent and the differencing disk do not match.
VHD_CHILD_PARENT_ID_MISMATCH = HResult("ERROR_VHD_CHILD_PARENT_ID_MISMATCH", 0xC03A000E)
#: The virtual sizes of the parent and the differencing disk do not match.
VHD_CHILD_PARENT_SIZE_MISMATCH = HResult("ERROR_VHD_CHILD_PARENT_SIZE_MISMATCH", 0xC03A0017)
#: A virtual disk system limitation.
VIRTUAL_DISK_LIMITATION = HResult("ERROR_VIRTUAL_DISK_LIMITATION", 0xC03A001A)

#: What the sim reports when asked to compact a disk that is the parent of a
#: differencing disk. No published Windows message for this refusal was found;
#: the code is the one the sim has always shown (winerror.h's name for it is
#: ``ERROR_VHD_CHILD_PARENT_SIZE_MISMATCH``, which is not this situation).
COMPACT_PARENT = VHD_CHILD_PARENT_SIZE_MISMATCH

"""The simulated host's Windows error codes: HRESULT_FROM_WIN32 of the documented Win32 codes."""

from __future__ import annotations

from ventana.backends.sim import hresults as h

#: Win32 error codes as Microsoft's "System Error Codes" pages list them.
WIN32 = {"ERROR_FILE_NOT_FOUND": 2, "ERROR_ACCESS_DENIED": 5, "ERROR_SHARING_VIOLATION": 32,
         "ERROR_DISK_FULL": 112, "ERROR_INVALID_STATE": 5023}


def test_win32_codes_are_hresult_from_win32_of_the_documented_ones() -> None:
    codes = [v for v in vars(h).values() if isinstance(v, h.HResult)]
    win32 = [c for c in codes if c.code >> 16 == 0x8007]
    assert {c.name for c in win32} == set(WIN32)
    for c in win32:
        assert c.code == 0x80070000 | WIN32[c.name], c  # HRESULT_FROM_WIN32
    for c in codes:
        assert c.code >> 16 in (0x8007, 0xC03A), c  # Win32, or FACILITY_VIRTUALIZATION errors
    assert str(h.SHARING_VIOLATION) == "0x80070020"

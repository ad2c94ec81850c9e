"""glibc malloc settings for the long-running service (``fieldgate run``).

glibc's default mmap threshold is dynamic: when a block it had mapped on its own (128 KiB
or more: a batch of scores, an SQLite result, a gzip body) is freed, it raises the
threshold to that block's size (up to 32 MiB) and the heap trim threshold to twice that.
From then on such blocks come from the heap and the arenas of the threads that use them,
and what they leave free stays resident: 10-15 MB of a gateway serving 500 nodes
(docs/benchmarks.md, "issue 18: the gateway's memory"). Fixing both thresholds keeps large
blocks in mappings of their own, returned to the system when freed, and lets the heap shrink.

The same as starting the process with ``MALLOC_MMAP_THRESHOLD_=131072
MALLOC_TRIM_THRESHOLD_=131072``, done inside so that every way of starting the service gets
it. Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys

_LOGGER = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, now kept fixed


def tune_malloc(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold_bytes``; True if glibc took them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        gnu_libc_version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no gnu_get_libc_version)
    gnu_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) and bool(
        mallopt(M_TRIM_THRESHOLD, threshold_bytes)
    )
    _LOGGER.debug(
        "glibc %s: mmap and trim thresholds fixed at %d bytes: %s",
        gnu_libc_version().decode(),
        threshold_bytes,
        ok,
    )
    return ok

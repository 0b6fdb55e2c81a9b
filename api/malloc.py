"""The web process's allocator setting: large blocks mapped on their own, returned when freed."""
import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
LARGE_BLOCK = 128 * 1024  # glibc's default threshold


def keep_large_blocks_mapped() -> bool:
    """Give every large block (over 128 KB) its own mapping, returned to the system when freed.

    glibc raises its mmap threshold to the size of any mapped block freed. The catalogue
    snapshot (shared.catalogue) is reloaded after each popular refresh, every 15 minutes
    by default; after its first reload its arrays (a 6 MB one on large) land in the heap,
    where freed ones fragment it: a process's RSS wandered between 53 and 68 MB over 8
    reloads on large, and stayed at 54.6 MB with fixed thresholds. Requests rarely make a
    block that large. False where the C library has no mallopt (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)) and bool(mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK))

"""api.malloc: a large block freed in the web process goes back to the system, whatever was freed before."""
import subprocess
import sys

from deploy.stack import ROOT

PROBE = """
import sys
from api.malloc import keep_large_blocks_mapped
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
fixed = keep_large_blocks_mapped() if sys.argv[1] == "fixed" else None
block = bytearray(8 * 2**20); del block  # a large block freed: glibc would raise its threshold to 8 MB
before = rss_mb()
block = bytearray(b"x" * (7 * 2**20)); del block  # (and its 7 MB source)
print(fixed, round(rss_mb() - before, 1))
"""


def probe(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    fixed, kept = out.stdout.split()
    return fixed, float(kept)


def test_large_blocks_are_returned_when_freed():
    fixed, kept = probe("fixed")
    assert fixed == "True" and kept < 1.0
    # Without it, glibc keeps both 7 MB blocks in its heap: the probe can tell the difference.
    assert probe("default")[1] >= 7.0

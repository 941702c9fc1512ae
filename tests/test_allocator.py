"""A CPU training process keeps freed memory in its heap: the next step's large blocks come
back without page faults. Measured through the process's resident memory, in a fresh process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys
from cgan_kit.training.allocator import keep_freed_memory
import torch

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

kept = keep_freed_memory() if sys.argv[1] == "keep" else False
before = resident_mb()
block = torch.ones(64 * 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
del block
print(kept, round(resident_mb() - before))
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's mallopt only")
@pytest.mark.parametrize("mode", ["keep", "default"])
def test_freed_blocks_stay_in_the_process_only_when_kept(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    kept, grown = out.split()
    assert kept == str(mode == "keep")
    if mode == "keep":
        assert int(grown) >= 60, out  # the freed 64 MB stayed, ready for reuse
    else:
        assert int(grown) < 10, out  # glibc unmapped it on free: the next one page-faults again

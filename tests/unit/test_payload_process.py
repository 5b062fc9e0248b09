"""Process-wide settings the payload makes before it works: glibc's malloc keeps freed memory for reuse."""

import platform
import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: page faults while a batch loop allocates, fills and frees 64 MB tensors, after a
# first pass that faults the memory in.
_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from container_payload.run import keep_freed_memory
    took = keep_freed_memory() if sys.argv[1] == "keep" else None
    for _ in range(2):
        a, b = torch.empty(1 << 24).fill_(1.0), torch.empty(1 << 24).fill_(1.0)
        del a, b
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.empty(1 << 24).fill_(2.0)
    print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str):
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True, capture_output=True, text=True).stdout
    took, faults = out.split()
    return took, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_freed_memory_is_reused_without_page_faults():
    took, kept = _faults("keep")
    _, default = _faults("default")
    assert took == "True"
    # 64 MB is 16384 pages of 4 KB: by default glibc maps each tensor afresh (transparent huge pages may make that
    # fewer faults, never near none); kept, the tensors land in memory already faulted in (seen: none, or once one
    # tensor's worth, when a small allocation split the free block; eight tensors' worth without the setting)
    assert default > 8 * 1000
    assert kept < default / 3

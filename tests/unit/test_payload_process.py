"""Process-wide settings the payload makes before it works: glibc's malloc keeps freed memory for reuse."""

import os
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


_ATEXIT_MODEL = textwrap.dedent("""
    import atexit, os
    from torch import nn

    atexit.register(lambda: open(os.environ["EXIT_MARK"], "w").write("ran"))


    class Net(nn.Module):
        def __init__(self, num_classes=7):
            super().__init__()
            self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

        def forward(self, x):
            return self.conv(x)
""")


@pytest.mark.parametrize("readable", [True, False])
def test_the_payload_exits_with_its_code_after_the_exit_handlers(tmp_path, readable):
    """The payload ends with os._exit once the result is out (container_payload/__main__.py exit_now): the job's
    exit code stands, and exit handlers (a library's clean-up, logging's flush) still run."""
    from helpers import source_path

    from container_payload.job import EXIT_BAD_JOB, InspectJob

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "atexit_net.py").write_text(_ATEXIT_MODEL)
    job = tmp_path / "job.json"
    if readable:
        job.write_text(InspectJob(run_dir=str(tmp_path), target="DPUCZDX8G_ISA1_B4096", input_size=(3, 8, 8),
                                  model="atexit_net:Net", model_path=str(tmp_path / "models")).to_json())
    env = dict(os.environ, EXIT_MARK=str(tmp_path / "mark"), PYTHONPATH=source_path(os.environ.get("PYTHONPATH")))
    proc = subprocess.run([sys.executable, "-m", "container_payload", "--job", str(job)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == (0 if readable else EXIT_BAD_JOB), proc.stderr
    assert '"event":"result"' in proc.stdout if readable else '"event":"error"' in proc.stdout
    assert (tmp_path / "mark").exists() is readable  # the model's module registered it

"""python -m container_payload --job PATH

--job -: started ahead of its job (hostctl/warm.py), import torch, then read {"job": PATH, "cwd": DIR} as one line
of JSON from stdin and run that job in DIR, as if started there with --job PATH. At the end of input, exit."""

import argparse
import json
import os
import sys


def wait_for_job() -> str:
    """The warm start's wait: torch's import (a second or more) happens while hostctl starts; then the job."""
    import torch  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():  # hostctl needed no payload after all, or is gone
        os._exit(0)
    ticket = json.loads(line)
    started_in = os.getcwd()
    os.chdir(ticket["cwd"])
    if sys.path and sys.path[0] == started_in:  # -m put the start directory first, as it would the job's
        sys.path[0] = os.getcwd()
    devnull = os.open(os.devnull, os.O_RDONLY)  # the payload reads nothing more, as with stdin=DEVNULL
    os.dup2(devnull, 0)
    os.close(devnull)
    return ticket["job"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m container_payload", description=__doc__)
    parser.add_argument("--job", required=True, help="path of job.json")
    # parse_known_args: pytorch_nndct reads and strips its own --nndct_* options from sys.argv.
    args, _ = parser.parse_known_args()
    if args.job == "-":
        args.job = wait_for_job()
    from container_payload.job import job_task
    from container_payload.lease import start_from_environment

    start_from_environment()  # on a remote engine: exit when the host's heartbeat stops (lease.py)

    try:
        with open(args.job, encoding="utf-8") as f:
            task = job_task(f.read())
    except OSError:
        task = "quantize"  # run.main reports the unreadable job
    if task == "compile":
        from container_payload.compiler import main_job  # no torch: the compiler needs none
    elif task == "inspect":
        from container_payload.inspector.run import main as main_job
    else:
        from container_payload.run import main as main_job
    code = main_job(args.job)
    if task == "inspect":
        # Everything is written and the result sent: the interpreter's teardown (torch's modules, the traced
        # graph) would take 0.3 s more, a tenth of the whole `hostctl inspect`.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

"""python -m container_payload --job PATH

--job -: started ahead of its job (hostctl/warm.py), import torch, then read {"job": PATH, "cwd": DIR} as one line
of JSON from stdin and run that job in DIR, as if started there with --job PATH. At the end of input, exit."""

import argparse
import atexit
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


def exit_now(code):
    """Exit once everything is written and the result sent, without the interpreter's teardown: freeing every
    module and tensor one by one took 0.4-0.6 s after a quantize run's result (0.3 s after an inspection's), time
    the host spends waiting for the process or the container to end. What exit handlers do (logging's flush, a
    library's clean-up) still happens; the files the job wrote are closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is not None:
        run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m container_payload", description=__doc__)
    parser.add_argument("--job", required=True, help="path of job.json")
    # parse_known_args: pytorch_nndct reads and strips its own --nndct_* options from sys.argv.
    args, _ = parser.parse_known_args()
    if args.job == "-":
        args.job = wait_for_job()
    from container_payload.job import job_task
    from container_payload.lease import TASK_ENV, start_from_environment, wait_until_ready

    start_from_environment()  # on a remote engine: exit when the host's heartbeat stops (lease.py)

    task = os.environ.get(TASK_ENV)  # on a remote engine, the job file may not be in yet
    if not task:
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
    waited = wait_until_ready()  # on a remote engine: the job and inputs were copied in while all that imported
    if waited is not None and waited >= 0.1:  # the copy, not the start, is what the run waited on
        from container_payload.events import log

        log("the payload started before its files were in and waited {:.1f} s for them".format(waited))
    code = main_job(args.job)
    exit_now(code)

"""python -m container_payload --job PATH"""

import argparse
import os
import sys

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m container_payload", description=__doc__)
    parser.add_argument("--job", required=True, help="path of job.json")
    # parse_known_args: pytorch_nndct reads and strips its own --nndct_* options from sys.argv.
    args, _ = parser.parse_known_args()
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

"""The payload's lease on its host: when the host's heartbeat stops, the payload exits (standard library only).
And its go-ahead: on a remote engine it may start before its inputs are in, and waits for them (wait_until_ready).

On a remote engine the host may vanish (its link dropped, the laptop closed) while the container runs on: nobody
would stop it. hostctl therefore rewrites a small file in the container every few seconds (HOSTCTL_LEASE names
it) through the engine, which needs the link; a thread here watches that file and ends the process when it has
not changed for HOSTCTL_LEASE_SECONDS. Only a change counts, judged by this container's own clock, so the two
machines' clocks never need to agree. docker-init then sees its child gone and the container stops.
"""

import os
import sys
import threading
import time

LEASE_ENV = "HOSTCTL_LEASE"
LEASE_SECONDS_ENV = "HOSTCTL_LEASE_SECONDS"
READY_ENV = "HOSTCTL_READY"
TASK_ENV = "HOSTCTL_TASK"  # the job's task, for what the payload imports before the job file is in
EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: the host is gone, the job itself did not fail
CHECK_EVERY = 1.0
READY_POLL = 0.01


def start_from_environment():
    """Start the watchdog if the host asked for a lease; returns its thread, or None."""
    path = os.environ.get(LEASE_ENV)
    if not path:
        return None
    try:
        seconds = float(os.environ.get(LEASE_SECONDS_ENV, "30"))
    except ValueError:
        seconds = 30.0
    thread = threading.Thread(target=watch, args=(path, seconds), name="hostctl-lease", daemon=True)
    thread.start()
    return thread


# While the payload waits for its files (wait_until_ready), the directory they arrive in. The engine locks a
# container while it writes an archive into it, so the host's heartbeat (a write into the same container) waits
# until a long copy ends: the arriving bytes are the host's sign of life then.
_arriving = []


def _arrived():
    """(files, bytes) under the directory the payload waits on, or None when it waits on nothing."""
    if not _arriving:
        return None
    files = size = 0
    for folder, _, names in os.walk(_arriving[0]):
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
                files += 1
            except OSError:
                pass
    return files, size


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def watch(path, seconds, exit_process=os._exit, arrived=_arrived):
    """Return (or exit the process) once `path` has kept the same content for `seconds` and, while the payload
    waits for its files, no more of them arrived (`arrived`)."""
    last = (_read(path), arrived())
    changed = time.monotonic()
    while True:
        time.sleep(CHECK_EVERY)
        now = (_read(path), arrived())
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed > seconds:
            sys.stderr.write("hostctl lease: no heartbeat from the host for {:.0f} s (the host or the link to it "
                             "is gone); stopping\n".format(seconds))
            sys.stderr.flush()
            exit_process(EXIT_LEASE_LOST)
            return


def wait_until_ready(poll=READY_POLL):
    """Wait for the file READY_ENV names, if it names one; returns the seconds waited (None: no wait asked).

    On a remote engine the host starts the container as soon as the payload's code is in, and copies the job and
    the inputs while Python starts and imports torch (a second or more); this file comes last. Should the host go
    away meanwhile, the lease (started first) ends the wait; the files arriving count as heartbeats (_arriving)."""
    path = os.environ.get(READY_ENV)
    if not path:
        return None
    start = time.monotonic()
    _arriving[:] = [os.path.dirname(path)]
    try:
        while not os.path.exists(path):
            time.sleep(poll)
    finally:
        del _arriving[:]
    return time.monotonic() - start

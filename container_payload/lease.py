"""The payload's lease on its host: when the host's heartbeat stops, the payload exits (standard library only).

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
EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: the host is gone, the job itself did not fail
CHECK_EVERY = 1.0


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


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def watch(path, seconds, exit_process=os._exit):
    """Return (or exit the process) once `path` has kept the same content for `seconds`."""
    last = _read(path)
    changed = time.monotonic()
    while True:
        time.sleep(CHECK_EVERY)
        now = _read(path)
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed > seconds:
            sys.stderr.write("hostctl lease: no heartbeat from the host for {:.0f} s (the host or the link to it "
                             "is gone); stopping\n".format(seconds))
            sys.stderr.flush()
            exit_process(EXIT_LEASE_LOST)
            return

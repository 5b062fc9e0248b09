"""--print-docker-cmd: a runnable `docker run` line equivalent to a run (it writes straight into --output-dir)."""

from __future__ import annotations

import json
import shlex

from hostctl.options import QuantizeOptions
from hostctl.runtime.docker.shim import (
    IN_CODE,
    IN_INPUTS,
    IN_MODEL,
    IN_RUN,
    PAYLOAD_COMMAND,
    PAYLOAD_DIR,
    payload_environment,
    shim,
)
from hostctl.threads import plan_threads


def docker_command(opts: QuantizeOptions) -> str:
    """A runnable `docker run` line equivalent to the run (it writes straight into --output-dir)."""
    from container_payload.job import SAMPLES, STATE_DICT

    out = opts.output_dir.resolve()
    job = opts.to_job(f"{IN_INPUTS}/{STATE_DICT}", f"{IN_INPUTS}/{SAMPLES}", IN_RUN,
                      IN_MODEL if opts.model_path else None)
    env = payload_environment("$(id -u)", "$(id -g)", opts.conda_env)
    env.update(plan_threads(opts.threads, opts.cpus).environment())
    parts = ["mkdir", "-p", shlex.quote(str(out)), "&&", "docker", "run", "--rm", "--init", "--network", "none",
             "--user", "root", "--entrypoint", "''", "-w", IN_RUN]
    if opts.memory:
        parts += ["--memory", shlex.quote(opts.memory), "--memory-swap", shlex.quote(opts.memory)]
    if opts.cpus:
        parts += ["--cpus", f"{opts.cpus:g}"]
    binds = [(opts.input_dir.resolve(), IN_INPUTS, True), (out, IN_RUN, False),
             (PAYLOAD_DIR, f"{IN_CODE}/container_payload", True)]
    if opts.model_path:
        binds.append((opts.model_path.resolve(), IN_MODEL, True))
    for source, target, read_only in binds:
        spec = f"type=bind,source={source},target={target}" + (",readonly" if read_only else "")
        parts += ["--mount", shlex.quote(spec)]
    for key, value in env.items():
        parts += ["-e", f'{key}="{value}"' if value.startswith("$(") else shlex.quote(f"{key}={value}")]
    compact = json.dumps(json.loads(job.to_json()), ensure_ascii=False, separators=(",", ":"))
    parts += ["-e", shlex.quote(f"HOSTCTL_JOB={compact}")]
    parts += [shlex.quote(opts.image), *map(shlex.quote, shim(PAYLOAD_COMMAND))]
    return " ".join(parts)

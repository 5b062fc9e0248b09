"""hostctl doctor: can this machine run `hostctl quantize`, and if not, what to fix."""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from hostctl.errors import EnvironmentProblem

MIN_FREE_GB = 20  # the Vitis AI images are 11-17 GB


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def diagnose(image: str, output_dir: Path) -> list[Finding]:
    findings = [_platform(), _identity(), _disk(output_dir), *_socket()]
    try:
        from hostctl.runtime.docker import engine_facts

        facts = engine_facts(image)
    except EnvironmentProblem as exc:
        socket_failed = any(f.check == "socket" and not f.ok for f in findings)
        findings.append(Finding("engine", False, exc.message, "" if socket_failed else exc.hint or ""))
        return findings
    findings.append(Finding("engine", True, f"Docker {facts['version']} (API {facts['api_version']}, "
                                            f"{facts['os_arch']}) at {facts['url']}, round trip "
                                            f"{facts['rtt_ms']:.0f} ms"))
    findings.append(_container_resources(facts.get("cpus"), facts.get("memory"), facts["local"]))
    if not facts["local"]:
        findings.append(Finding("engine location", True, "remote: inputs are copied into each container and "
                                                          "results copied back (slower for large inputs)"))
        findings.append(_engine_disk(facts.get("engine_free"), facts["image"] is not None))
    if facts["image"] is None:
        findings.append(Finding("image", False, f"{image} is not on this machine (hostctl quantize pulls it "
                                                "with --pull missing, the default)", f"docker pull {image}"))
    else:
        size = facts.get("image_size") or 0
        findings.append(Finding("image", True, f"{image} ({facts['image'][7:19]}, {size / 1e9:.1f} GB)"))
        findings.append(Finding("image platform", bool(facts.get("platform_ok")),
                                facts.get("platform_problem") or f"{facts['image_arch']} runs here",
                                "" if facts.get("platform_ok") else "Use an amd64 host or install binfmt emulation."))
    leftovers = facts["leftovers"]
    findings.append(Finding("leftover containers", leftovers == 0, f"{leftovers} hostctl container(s) to clean",
                            "hostctl clean" if leftovers else ""))
    return findings


def _engine_disk(free: int | None, image_present: bool) -> Finding:
    """Free space on a remote engine's disk (this machine's disk check does not see it)."""
    if free is None:
        return Finding("engine disk", True, "unknown (measured in a container of the image, which is not there "
                                            "yet)" if not image_present else "unknown (df in a container failed)")
    need = 2 if image_present else MIN_FREE_GB
    ok = free / 1e9 > need
    return Finding("engine disk", ok, f"{free / 1e9:.0f} GB free on the engine for images, containers and copies",
                   "" if ok else "Free space on the engine's machine: docker system prune, docker image prune.")


def _container_resources(cpus: int | None, memory: int | None, local: bool) -> Finding:
    """What the engine gives a payload container (all its CPUs and memory unless --cpus and --memory say less),
    and the threads hostctl would run it with now (hostctl/threads.py)."""
    from hostctl.threads import plan_remote, plan_threads

    if not cpus:
        return Finding("container resources", True, "the engine does not say how many CPUs it has")
    plan = plan_threads(cpus_limit=float(cpus)) if local else plan_remote(None, None, cpus)
    gib = f", {memory / 2**30:.1f} GiB of memory" if memory else ""
    return Finding("container resources", True,
                   f"{cpus} CPU(s){gib} per container (less with --cpus, --memory); the payload would run "
                   f"{plan.threads} thread(s) now ({plan.why}), {plan.wait_policy_note}")


def _platform() -> Finding:
    machine = platform.machine()
    ok = machine in ("x86_64", "AMD64")
    return Finding("platform", ok, f"{platform.system()} {machine}, Python {platform.python_version()}",
                   "" if ok else "The Vitis AI images are amd64 only: use an x86_64 host or binfmt emulation, "
                                 "or hostctl quantize --runtime local --quantizer portable.")


def _identity() -> Finding:
    uid, gid = os.getuid(), os.getgid()
    detail = f"uid {uid}, gid {gid}: container files will be owned by {uid}:{gid}"
    if uid == 0:
        return Finding("uid/gid", True, detail + " (root: the payload runs as root in the container)")
    return Finding("uid/gid", True, detail)


def _disk(output_dir: Path) -> Finding:
    where = output_dir.resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free / 1e9
    docker_root = Path("/var/lib/docker")
    docker_free = shutil.disk_usage(docker_root).free / 1e9 if docker_root.exists() else None
    ok = free > 1 and (docker_free is None or docker_free > MIN_FREE_GB)
    detail = f"{free:.0f} GB free for results at {where}"
    if docker_free is not None:
        detail += f", {docker_free:.0f} GB free for images at {docker_root}"
    return Finding("disk", ok, detail, "" if ok else f"Free space: the Vitis AI image needs about {MIN_FREE_GB} GB.")


def _socket() -> list[Finding]:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return []
    path = Path(host[len("unix://"):] if host else "/var/run/docker.sock")
    if not path.exists():
        return [Finding("socket", False, f"{path} does not exist: no engine runs here, or DOCKER_HOST names another",
                        "sudo systemctl start docker\nsudo apt-get install docker.io && sudo systemctl start docker")]
    ok = os.access(path, os.R_OK | os.W_OK)
    return [Finding("socket", ok, f"{path} is {'' if ok else 'not '}readable and writable by you",
                    "" if ok else "sudo usermod -aG docker $USER, then log in again.")]

"""Connecting to the Docker engine the docker CLI would use, and saying in one line why that failed.

unix:// and tcp:// (with TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, or a context's TLS material) are the
SDK's own; ssh:// runs the system ssh (ssh.py says why), with ssh's own words when it fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterator

import docker
import docker.errors
import requests.exceptions

from hostctl.errors import EnvironmentProblem
from hostctl.runtime.docker.ssh import SshMissing, install_adapter, ssh_failure, warm_up

# Whole commands, not a script of this repository: most users installed hostctl without cloning it.
START_ENGINE_HINT = ("Start Docker (sudo systemctl start docker; to install it on Debian/Ubuntu: sudo apt-get install "
                     "docker.io) or set DOCKER_HOST.")


def connect() -> docker.DockerClient:
    """A client for the engine the docker CLI would use (DOCKER_HOST, then the current context)."""
    restore = install_adapter()
    try:
        with _engine_ca_first():
            client = docker.from_env(timeout=120, use_ssh_client=True)
        if isinstance(client.api.verify, str):
            client.api.trust_env = False  # see _engine_ca_first
        client.ping()
        warm_up(client)
        return client
    except docker.errors.DockerException as exc:
        raise _engine_problem(exc) from exc
    except requests.exceptions.RequestException as exc:
        raise _engine_problem(exc) from exc
    finally:
        restore()


@contextlib.contextmanager
def _engine_ca_first() -> Iterator[None]:
    """With DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, verify the engine with DOCKER_CERT_PATH's ca.pem, as the docker
    CLI does. requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (set system-wide on many machines) override a
    session's own CA file, so the engine's certificate would be checked against the public CAs and fail."""
    if not (os.environ.get("DOCKER_TLS_VERIFY") or os.environ.get("DOCKER_CERT_PATH")):
        yield
        return
    saved = {name: os.environ.pop(name) for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def engine_url() -> str:
    """Where the docker CLI would connect: DOCKER_HOST, else the current context's endpoint."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    try:
        from docker.context import ContextAPI

        context = ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT") or None)
        if context is not None and context.Host:
            return context.Host if context.Name == "default" else f"{context.Host} (context {context.Name})"
    except Exception:  # noqa: BLE001 - a broken context config is reported by the connection attempt itself
        pass
    return "unix:///var/run/docker.sock"


def _engine_problem(exc: Exception) -> EnvironmentProblem:
    text = str(exc)
    where = engine_url()
    failure = ssh_failure(exc)
    if failure is not None:
        return ssh_problem(failure, where)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return EnvironmentProblem(f"the Docker engine at {where} presented a certificate your CA does not sign",
                                  "Point DOCKER_CERT_PATH at the directory holding that engine's ca.pem, cert.pem "
                                  "and key.pem (with DOCKER_TLS_VERIFY=1).")
    if "SSLError" in text or "SSL" in text and "alert" in text:
        return EnvironmentProblem(f"TLS with the Docker engine at {where} failed: {_first_line(text)}",
                                  "Set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the engine's client certificates "
                                  "(ca.pem, cert.pem, key.pem), or use the engine's plain port.")
    if "Permission denied" in text or "PermissionError" in text:
        return EnvironmentProblem(f"permission denied on the Docker socket of {where}",
                                  "Add yourself to the docker group (sudo usermod -aG docker $USER, then log in "
                                  "again) or use rootless Docker.")
    if "No such file" in text or "FileNotFoundError" in text:
        return EnvironmentProblem(f"no Docker engine at {where}: the socket does not exist", START_ENGINE_HINT)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return EnvironmentProblem(f"the Docker engine at {where} refused the connection",
                                  "Start the engine (sudo systemctl start docker) or fix DOCKER_HOST.")
    return EnvironmentProblem(f"cannot reach the Docker engine at {where}: {_first_line(text) or exc}",
                              "Check `docker info`.")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def ssh_problem(failure: Exception, where: str | None = None) -> EnvironmentProblem:
    """One line for a failed ssh: what ssh said last, and the fix for the usual causes."""
    from hostctl.runtime.docker.ssh import SshFailure

    assert isinstance(failure, SshFailure)
    where = where or failure.target
    url = urllib.parse.urlsplit(failure.target)
    login = f"{url.username + '@' if url.username else ''}{url.hostname}"
    port = f"-p {url.port} " if url.port else ""
    try_it = f"ssh {port}{login} docker version"
    said = failure.last_line.removeprefix("ssh: ")
    if isinstance(failure, SshMissing):
        return EnvironmentProblem(f"cannot reach the Docker engine at {where}: no `ssh` command on PATH",
                                  "Install the OpenSSH client (sudo apt-get install openssh-client) or set "
                                  "DOCKER_HOST to a tcp:// engine.")
    status = f" (ssh exit status {failure.returncode})" if failure.returncode is not None else ""
    head = f"cannot reach the Docker engine at {where}: ssh: {said or 'no message'}{status}"
    if "Permission denied" in said and ("publickey" in said or "password" in said):
        hint = (f"ssh refused your key for {login}: load it into the agent (ssh-add ~/.ssh/KEY) or name it with "
                f"IdentityFile in ~/.ssh/config, then check with `{try_it}`.")
    elif "Host key verification failed" in said or "REMOTE HOST IDENTIFICATION HAS CHANGED" in said:
        hint = (f"the host key of {url.hostname} is not in your known_hosts: check it and accept it once with "
                f"`ssh {port}{login} true` (hostctl never skips host key checking).")
    elif "Connection refused" in said:
        hint = (f"nothing listens for ssh on {url.hostname} port {url.port or 22}: start sshd there, or fix the "
                "port in DOCKER_HOST (ssh://user@host:PORT) or in ~/.ssh/config.")
    elif "Could not resolve hostname" in said:
        hint = "Check the host name in DOCKER_HOST or the docker context (docker context ls)."
    elif "timed out" in said:
        hint = f"{url.hostname} does not answer: check the network, a VPN or a firewall, then `{try_it}`."
    elif "command not found" in said or failure.returncode == 127:
        hint = f"The docker CLI is missing on {url.hostname} (ssh runs `docker system dial-stdio` there): install it."
    elif "permission denied" in said.lower() and "docker" in said.lower():
        hint = f"{login} may not use the engine's socket there: add that user to the docker group on {url.hostname}."
    else:
        hint = f"Check with `{try_it}`."
    return EnvironmentProblem(head, hint)


def is_local_engine(client: docker.DockerClient) -> bool:
    """Whether the engine sees this machine's files (bind mounts work) or is remote (files must be copied)."""
    url = client.api.base_url
    return url.startswith(("http+docker://localhost", "http+docker://localunixsocket")) or \
        bool(re.match(r"^https?://(localhost|127\.0\.0\.1|\[::1\])[:/]", url))

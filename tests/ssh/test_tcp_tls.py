"""tcp:// with TLS, as DOCKER_TLS_VERIFY and DOCKER_CERT_PATH describe it to the docker CLI.

The engine's own TCP listener cannot be added to a running dockerd, so a TLS endpoint on loopback (real
certificates made with openssl, client certificate required) forwards each connection to the engine's socket,
as dockerd's `--tlsverify -H tcp://...` would serve it.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import run_hostctl

pytestmark = pytest.mark.docker


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certs(root: Path, name: str) -> Path:
    """ca.pem, cert.pem/key.pem (client) and server-cert.pem/server-key.pem, as `dockerd --tlsverify` uses them."""
    d = root / name
    d.mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name} CA",
            "-keyout", str(d / "ca-key.pem"), "-out", str(d / "ca.pem"))
    for who, extra in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        key, csr = d / f"{who}-key.pem", d / f"{who}.csr"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", str(key), "-out", str(csr))
        (d / f"{who}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca-key.pem"),
                "-CAcreateserial", "-days", "1", "-extfile", str(d / f"{who}.ext"), "-out", str(d / f"{who}-cert.pem"))
    (d / "cert.pem").write_bytes((d / "client-cert.pem").read_bytes())
    (d / "key.pem").write_bytes((d / "client-key.pem").read_bytes())
    return d


class TlsEndpoint:
    """TLS on 127.0.0.1 (client certificate required) in front of the engine's unix socket."""

    def __init__(self, certs: Path, engine_socket: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
        self.context.load_cert_chain(str(certs / "server-cert.pem"), str(certs / "server-key.pem"))
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.engine_socket = engine_socket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        engine = socket.socket(socket.AF_UNIX)
        engine.connect(self.engine_socket)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(engine, client), daemon=True).start()
        pump(client, engine)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_endpoint(tmp_path, docker_client):
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        pytest.skip("the TLS endpoint forwards to a local engine socket")
    certs = make_certs(tmp_path, "engine")
    endpoint = TlsEndpoint(certs, host[len("unix://"):])
    yield endpoint, certs
    endpoint.close()


def test_doctor_over_tcp_with_tls(tmp_path, stand_in_image, tls_endpoint):
    endpoint, certs = tls_endpoint
    url = f"tcp://127.0.0.1:{endpoint.port}"
    env = {"DOCKER_HOST": url, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"], env=env)
    engine = {f["check"]: f for f in json.loads(proc.stdout)}["engine"]
    assert engine["ok"], engine
    assert url in engine["detail"]


def test_a_certificate_from_another_ca_is_one_line(tmp_path, stand_in_image, tls_endpoint):
    endpoint, _ = tls_endpoint
    other = make_certs(tmp_path, "other")
    env = {"DOCKER_HOST": f"tcp://127.0.0.1:{endpoint.port}", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(other)}
    proc = run_hostctl(["doctor", "--image", stand_in_image, "--json"], env=env)
    assert proc.returncode == 3
    engine = {f["check"]: f for f in json.loads(proc.stdout)}["engine"]
    assert not engine["ok"]
    assert "certificate" in engine["detail"] and "\n" not in engine["detail"]
    assert "DOCKER_CERT_PATH" in engine["fix"]

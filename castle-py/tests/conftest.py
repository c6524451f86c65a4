import faulthandler
import http.server
import json
import os
import pathlib
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "lab"

# No single test here needs more than a minute; a hang dumps every thread and exits
# rather than stalling the test command.
HANG_SECONDS = 180


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


def lab_copy(dest: pathlib.Path, time_scale: float) -> pathlib.Path:
    """A private copy of the built-in lab at `dest`; returns its castle.toml."""
    for sub in ["secrets", "manifests", "charts"]:
        shutil.copytree(LAB / sub, dest / sub)
    for f in LAB.iterdir():  # the files beside castle.toml (the Vault CA)
        if f.is_file() and f.name != "castle.toml":
            shutil.copy(f, dest / f.name)
    text = (LAB / "castle.toml").read_text()
    assert "time_scale = 0.02" in text
    (dest / "castle.toml").write_text(text.replace("time_scale = 0.02", f"time_scale = {time_scale}"))
    return dest / "castle.toml"


@pytest.fixture
def lab(tmp_path: pathlib.Path) -> pathlib.Path:
    """The built-in lab on a fast clock (a rebirth takes about 1 s of wall time)."""
    return lab_copy(tmp_path, 0.002)


@pytest.fixture
def slow_lab(tmp_path: pathlib.Path) -> pathlib.Path:
    """The built-in lab on a slower clock (a rebirth takes about 15 s), to interrupt."""
    return lab_copy(tmp_path, 0.05)


@pytest.fixture
def lab_secrets() -> list[str]:
    """Every secret value of the lab, to look for where none may appear."""
    return [p.read_text().strip() for p in (LAB / "secrets").iterdir() if p.read_text().strip()]


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Python's own SIGINT handler, even where the runner inherited SIGINT ignored
    (a background job of a non-interactive shell)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def self_signed(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    if shutil.which("openssl") is None:
        assert not os.environ.get("CI"), "CI is set but openssl is not installed"
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"],
        check=True,
        capture_output=True,
    )
    return cert, key


Route = Callable[[str, str, bytes], tuple[int, Any]]


class FakeApi:
    """A tiny HTTP server in a Python thread of this process: it answers only while
    the GIL is free, so every call that reaches it proves the call released the GIL."""

    def __init__(self, route: Route, tls: tuple[pathlib.Path, pathlib.Path] | None = None) -> None:
        # (method, path, headers with lower-case names)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                api.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, payload = route(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeApi]]:
    """Starts a FakeApi; `tls=(cert, key)` serves https."""
    servers: list[FakeApi] = []

    def start(route: Route, tls: tuple[pathlib.Path, pathlib.Path] | None = None) -> FakeApi:
        servers.append(FakeApi(route, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()

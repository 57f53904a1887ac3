"""Listening: a socket bound to localhost unless remote access is asked for explicitly, served by uvicorn."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Callable, Iterator

from asap.errors import AsapError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int, allow_remote: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = any free port); any host but localhost needs allow_remote."""
    host = str(host).strip()
    if host not in LOCAL_HOSTS and not allow_remote:
        raise AsapError(f"host={host} would let other machines reach the demo; pass allow_remote=true to bind to "
                        f"anything but localhost (127.0.0.1, ::1)")
    if not 0 <= int(port) <= 65535:
        raise AsapError(f"port={port} must be in 0..65535")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise AsapError(f"host={host}: cannot resolve it ({e.strerror or e})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as e:
        sock.close()
        raise AsapError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """http://HOST:PORT/ of a bound socket (IPv6 in brackets; a wildcard address shown as this machine's name)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def make_server(app: Any, log_level: str = "info") -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug", lifespan="on")
    return uvicorn.Server(config)


def serve(app: Any, sock: socket.socket, log_level: str = "info") -> None:
    """Serve ``app`` on ``sock`` until interrupted (Ctrl-C)."""
    make_server(app, log_level).run(sockets=[sock])


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
            ready: Callable[[str], None] | None = None) -> Iterator[str]:
    """Serve ``app`` on a background thread for the duration of the block; yields its URL (tests, measurements)."""
    sock = bind(host, port)
    server = make_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo server did not start")
            time.sleep(0.01)
        url = url_of(sock)
        if ready is not None:
            ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

"""Serving the WSGI app with waitress, binding first so a busy port fails loudly at start."""

from __future__ import annotations

import errno
import threading
from typing import Any, Optional

from waitress.server import create_server


def make_server(app: Any, host: str, port: int, *, threads: int = 8) -> Any:
    """Bind `host:port` now (port 0 picks a free one); a clear OSError if it cannot.

    The returned server's `.run()` serves until stopped (see `Serving.stop`), and
    `.effective_port` is the bound port.
    """
    try:
        return create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            clear_untrusted_proxy_headers=True,
            ident="loom",
        )
    except OSError as exc:
        reason = (
            "address already in use"
            if exc.errno == errno.EADDRINUSE
            else (exc.strerror or str(exc))
        )
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from exc


class Serving:
    """A bound server running in a background thread; `stop()` ends it cleanly.

    waitress has no stop call: closing the listening socket leaves keep-alive
    connections (and so its loop) running. `stop()` asks the loop thread itself,
    through waitress's trigger, to close every channel, which ends the loop.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.host: str = server.effective_host
        self.port: int = server.effective_port
        self._thread = threading.Thread(target=server.run, name="loom-rest", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        server = self.server

        def close_all() -> None:
            for channel in list(server._map.values()):
                channel.close()

        if self._thread.is_alive():
            server.task_dispatcher.shutdown(timeout=timeout)
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout)

    close = stop

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the server stops (or `timeout` passes)."""
        self._thread.join(timeout)


def serve(app: Any, host: str, port: int, *, threads: int = 8) -> Serving:
    """Bind now (OSError with a clear message on a busy port), then serve from a daemon thread.

    Returns at once; call `.close()` (or `.stop()`) to stop, `.wait()` to block until stopped.
    """
    return Serving(make_server(app, host, port, threads=threads))

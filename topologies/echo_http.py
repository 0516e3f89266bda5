"""A tiny HTTP server that answers every GET with the client's address, one line.

    python3 topologies/echo_http.py [--port 80] [--log FILE]

The lab's "outside" host runs it (so a guest behind SNAT learns which address the
internet sees: its router's gateway address or its floating IP), and the demo runs
it in guests (so a request through a floating IP or a port forwarding shows the
caller's real address). Standard library only: it runs as a script, by path, in
any namespace. `--log` appends one line per request (and is the marker the lab
finds the process by).
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO


class EchoHandler(BaseHTTPRequestHandler):
    log: TextIO | None = None

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = f"{self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base's name)
        if self.log is not None:
            self.log.write(f"{self.client_address[0]}:{self.client_address[1]} "
                           f"{format % args}\n")
            self.log.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--log", help="append one line per request here")
    args = p.parse_args(argv)
    EchoHandler.log = open(args.log, "a") if args.log else None  # noqa: SIM115 (process-long)
    server = ThreadingHTTPServer(("0.0.0.0", args.port), EchoHandler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

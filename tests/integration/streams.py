"""A long-lived TCP connection between two guests, to watch what rule changes do to it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

SERVER = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); n = 0
while True:
    d = c.recv(4096)
    if not d:
        break
    n += d.count(b"\n"); print(n, flush=True)
"""

CLIENT = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", flush=True)
while True:
    c.send(b"x\n"); time.sleep(0.05)
"""


class Stream:
    """Server in one namespace, client in another; counts lines the server received."""

    def __init__(self, server_ns: str, client_ns: str, server_ip: str, port: int) -> None:
        self.count = 0
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER, server_ip,
             str(port)], stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None
        assert self.server.stdout.readline().strip() == "listening"
        threading.Thread(target=self._read, daemon=True).start()
        self.client = subprocess.Popen(
            ["ip", "netns", "exec", client_ns, sys.executable, "-c", CLIENT, server_ip,
             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def _read(self) -> None:
        assert self.server.stdout is not None
        for line in self.server.stdout:
            if line.strip().isdigit():
                self.count = int(line)

    def flowing(self, seconds: float = 1.5) -> bool:
        """Did the server receive anything new within `seconds`?"""
        start = self.count
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.count > start:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        for p in (self.client, self.server):
            p.kill()
            p.wait(5)

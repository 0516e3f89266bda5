"""GET /topology in a real browser: headless Chromium against a real controller.

One hypervisor (a private OVS in a namespace, run by the real controller process),
a network with one port bound to a guest on it and one port bound nowhere. The
page must carry the SVG with every node of GET /v1/topology labelled, its script
must refresh the picture from /v1/topology.svg, and a 1280x800 screenshot must be
a picture (not a blank page): rows that differ from the background, the chassis
drawn dark, the network's colour on its ports.

Set LOOM_TOPOVIEW_SHOT=FILE to keep the screenshot for a look.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from controller.topoview import render
from tests.integration.harness import single_host

pytestmark = pytest.mark.integration

# How this machine runs Chromium headless (as root, no network beyond loopback).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)
WIDTH, HEIGHT = 1280, 800


def chromium_binary() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "needs Debian's chromium: run `sudo make deps` (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and the browser test {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def chromium(*args: str, timeout: float = 120.0) -> str:
    """Run Chromium headless with a fresh profile; its stdout (the DOM for --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="loom-chromium-") as profile:
        done = subprocess.run(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"chromium {args}: {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def read_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows of raw pixels, bytes per pixel) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif ctype == b"IDAT":
            idat += chunk
        elif ctype == b"IEND":
            break
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = prev[i]
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                up_left = prev[i - bpp] if i >= bpp else 0
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows, bpp


def colours(row: bytes, bpp: int) -> set[bytes]:
    return {row[i:i + 3] for i in range(0, len(row), bpp)}


def rgb(hex_colour: str) -> bytes:
    return bytes.fromhex(hex_colour.lstrip("#"))


def test_topology_page_in_chromium(tmp_path: Path) -> None:
    chromium_binary()
    with single_host(tmp_path / "state") as host:
        api = host.api
        net = api.create("network", name="web-net")
        api.create("subnet", network_id=net["id"], cidr="10.40.0.0/24", ip_version=4)
        web = api.create("port", network_id=net["id"], name="web-1")
        spare = api.create("port", network_id=net["id"], name="spare-1")
        host.guest_for("web1", web)  # bound on hv1's br-int; waits until ACTIVE

        doc: dict[str, Any] = api.get("/v1/topology").ok()
        nodes = {n["id"]: n for n in doc["nodes"]}
        assert nodes["chassis:hv1"]["connected"] is True
        [switch] = [n for n in doc["nodes"] if n["kind"] == "switch"]
        assert (switch["chassis"], switch["name"], switch["connected"]) == ("hv1", "br-int", True)
        web_node, spare_node = nodes[f"port:{web['id']}"], nodes[f"port:{spare['id']}"]
        assert (web_node["name"], web_node["network_name"], web_node["status"]) == \
            ("web-1", "web-net", "ACTIVE")
        assert spare_node["status"] == "DOWN"
        kinds = {(lk["kind"], lk["src"]["node"], lk["dst"]["node"]) for lk in doc["links"]}
        assert ("host", switch["id"], web_node["id"]) in kinds
        assert ("hosts", "chassis:hv1", switch["id"]) in kinds
        assert not any(spare_node["id"] in (s, d) for _, s, d in kinds)

        url = f"{api.base_url}/topology"
        # the DOM holds the SVG with every node, labelled
        dom = chromium("--dump-dom", f"{url}?refresh=0")
        assert "<svg" in dom and 'class="loom-topology"' in dom
        for n in doc["nodes"]:
            assert f'data-node="{n["id"]}"' in dom, n["id"]
        for label in ("hv1", "br-int", "web-1", "spare-1", "web-net (project"):
            assert f">{label}" in dom, label

        # the page refreshes the picture in place from /v1/topology.svg
        dom = chromium("--virtual-time-budget=6000", "--dump-dom", f"{url}?refresh=1")
        assert 'id="status" class="">updated ' in dom, dom[:600]
        assert 'data-node="chassis:hv1"' in dom

        shot = tmp_path / "topology.png"
        chromium(f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", f"{url}?refresh=0")
        keep = os.environ.get("LOOM_TOPOVIEW_SHOT")
        if keep:
            shutil.copyfile(shot, keep)
        width, height, rows, bpp = read_png(shot.read_bytes())
        assert (width, height) == (WIDTH, HEIGHT)
        background = rgb("#f8fafc")
        busy = [y for y, row in enumerate(rows) if colours(row, bpp) - {background}]
        assert len(busy) > HEIGHT // 4, f"only {len(busy)} rows differ from the background"
        seen: set[bytes] = set()
        for row in rows:
            seen |= colours(row, bpp)
        assert rgb("#1f2937") in seen, "no connected chassis drawn"
        assert rgb(render.PALETTE[0]) in seen, "the network's colour is not on its ports"
        assert rgb("#e0e7ff") in seen, "no connected switch drawn"

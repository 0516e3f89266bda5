"""REST reads at 100 and 10,000 ports: does a read cost what it returns? (issue 11)

A real northbound store (ovsdb-server in a temp dir) is filled directly, in one
transaction, with N ports over N/100 networks (at least one), none bound; every 10
ports share a `device_id`. The API app runs in-process with the real engine as its
runtime (not started, no switch): every port's status is asked of
`Engine.port_status`, the path that used to pass over every port for each unbound
one. Timed through WSGI (request parsing, views, JSON), median of `--repeat` runs:

  list         GET /v2.0/ports                              (every port)
  filtered     GET /v2.0/ports?device_id=vm-7               (10 ports)
  deep page    GET /v2.0/ports?limit=100&marker=<the 101st port from the end>
               (99 ports at 100, 100 at 10,000)
  show         GET /v2.0/ports/<id>

`first` is the first full list after the fill (per-snapshot indexes built then,
from the whole table: the app saw no earlier snapshot). `1 write` is the full list
right after one port was renamed (a new snapshot, its indexes carried over from the
previous one by the store's delta), median of `--repeat` (write, list) rounds.
Timed: the WSGI call up to the encoded body (the client's JSON parsing is not).

    .venv/bin/python -m bench.bench_rest_reads [--sizes 100 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webob import Request

from controller import intent as m
from controller.engine import Engine
from controller.rest import make_app
from controller.store import EmbeddedOvsdb, NorthboundStore
from controller.store.txn import TxnHelper
from controller.topology import Topology

PER_NETWORK = 100
STAMP = "2026-01-01T00:00:%02dZ"


def fill(store: NorthboundStore, n_ports: int, per_network: int = PER_NETWORK) -> list[str]:
    """N ports over ceil(N / per_network) networks, one /16 subnet each, in one transaction.

    Port i: project p{i % 3}, device_id vm-{i // 10}, created_at one of 60 seconds (so
    the (created_at, id) order interleaves networks). Returns the port ids."""
    n_nets = max(1, -(-n_ports // per_network))
    ids: list[str] = []

    def write(h: TxnHelper, intent: m.Intent) -> None:
        for k in range(n_nets):
            net = m.Network(id=str(uuid.UUID(int=k + 1)), project_id="p0", name=f"net{k}",
                            network_type="vxlan", segmentation_id=1000 + k)
            h.put(net)
            h.put(m.Subnet(id=str(uuid.UUID(int=0x10000 + k)), project_id="p0",
                           network_id=net.id, name=f"sub{k}", ip_version=4,
                           cidr=f"10.{k // 256}.{k % 256}.0/24" if per_network < 250
                           else f"10.{k}.0.0/16", gateway_ip=None))
        for i in range(n_ports):
            k = i // per_network
            port_id = str(uuid.uuid4())
            ids.append(port_id)
            host = i % per_network + 2
            h.put(m.Port(
                id=port_id, project_id=f"p{i % 3}", network_id=str(uuid.UUID(int=k + 1)),
                name=f"port{i}", mac_address=f"fa:16:3e:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                                             f"{i & 255:02x}",
                fixed_ips=(m.FixedIP(str(uuid.UUID(int=0x10000 + k)),
                                     f"10.{k // 256}.{k % 256}.{host}" if per_network < 250
                                     else f"10.{k}.{host >> 8}.{host & 255}"),),
                device_id=f"vm-{i // 10}", created_at=STAMP % (i % 60),
                updated_at=STAMP % (i % 60), revision_number=1))

    store.transact(write, timeout=600)
    return ids


def timed(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def after_one_write(store: NorthboundStore, port_id: str, repeat: int,
                    list_all: Callable[[], Any]) -> float:
    """Median time of the full list right after a one-port write (untimed)."""
    times = []
    for r in range(repeat):
        def rename(h: TxnHelper, intent: m.Intent, r: int = r) -> None:
            h.put(dataclasses.replace(intent.ports[port_id], name=f"renamed-{r}"))

        generation = store.transact(rename)
        assert store.latest().generation >= generation
        started = time.perf_counter()
        list_all()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(n_ports: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="loom-bench-reads-") as tmp:
        db = EmbeddedOvsdb(Path(tmp)).start()
        store = NorthboundStore(db.remote).connect(60)
        try:
            started = time.perf_counter()
            ids = fill(store, n_ports)
            filled = time.perf_counter() - started
            deadline = time.monotonic() + 60
            while len(store.latest().ports) < n_ports and time.monotonic() < deadline:
                time.sleep(0.05)
            app = make_app(store, Engine(store, Topology()))

            def answer(path: str) -> Any:
                """What is timed: the request through the app to the encoded body."""
                resp = Request.blank(path).get_response(app)
                assert resp.status_int == 200, (path, resp.status, resp.text[:300])
                return resp

            def get(path: str) -> Any:
                return answer(path).json

            started = time.perf_counter()
            first_resp = answer("/v2.0/ports")
            first = time.perf_counter() - started
            listed = first_resp.json["ports"]
            assert len(listed) == n_ports
            deep = max(0, n_ports - 101)  # as deep as a full page allows
            marker = listed[deep]["id"]
            filtered = get("/v2.0/ports?device_id=vm-7")["ports"]
            assert len(filtered) == 10, len(filtered)
            page = get(f"/v2.0/ports?limit=100&marker={marker}")["ports"]
            assert [p["id"] for p in page] == [p["id"] for p in listed[deep + 1:deep + 101]]
            out = {
                "fill_s": filled,
                "first": first,
                "list": timed(lambda: answer("/v2.0/ports"), repeat),
                "filtered": timed(lambda: answer("/v2.0/ports?device_id=vm-7"), repeat),
                "deep page": timed(lambda: answer(f"/v2.0/ports?limit=100&marker={marker}"),
                                   repeat),
                "show": timed(lambda: answer(f"/v2.0/ports/{ids[len(ids) // 2]}"), repeat),
                "1 write": after_one_write(store, ids[len(ids) // 3], repeat,
                                           lambda: answer("/v2.0/ports")),
            }
            return out
        finally:
            store.close()
            db.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    results = {n: measure(n, args.repeat) for n in args.sizes}
    cols = ["first", "1 write", "list", "filtered", "deep page", "show"]
    print(f"# GET /v2.0/ports, in-process WSGI, median of {args.repeat} (ms); "
          "store filled directly")
    print(f"{'ports':>8} " + " ".join(f"{c:>10}" for c in cols) + "  (fill s)")
    for n, r in results.items():
        print(f"{n:>8} " + " ".join(f"{r[c] * 1000:10.2f}" for c in cols)
              + f"  ({r['fill_s']:.1f})")
    if len(results) > 1:
        small, big = results[min(results)], results[max(results)]
        print(f"{'ratio':>8} " + " ".join(f"{big[c] / small[c]:9.1f}x" for c in cols))
    print("command: .venv/bin/python -m bench.bench_rest_reads " + " ".join(
        argv if argv is not None else sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Explain: why a packet is allowed or dropped, read from the flows installed on the switches.

`Tracer(store, topology)` answers GET /v1/trace; `trace` holds the pure parts
(flow string, ofproto/trace parsing, verdict), `runner` the ovs-appctl I/O.
"""

from controller.explain.tracer import TraceError, Tracer

__all__ = ["TraceError", "Tracer"]

"""Limits on what one client may send or hold, in one place (documented in README).

A controller shared by many tenants must bound every input before it costs
anything: a body is refused by its declared size before it is read, a parsed body
by its depth before it is walked, and a connection by the server before it can
take a slot another client needs.
"""

from __future__ import annotations

# Neutron's own limit (oslo.middleware sizelimit, max_request_body_size = 114688).
MAX_BODY_BYTES = 114_688
# Neutron bodies nest at most five levels (a port's fixed_ips inside a list inside
# an object inside the envelope); 32 leaves room for binding:profile and refuses
# the 100k-level bodies that would otherwise exhaust the parser's recursion.
MAX_JSON_DEPTH = 32

# --- Connections (controller/rest/server.py; issue 9 item 2) ---------------------
# A request line longer than this answers 414, as Neutron's eventlet server does
# (its MAX_REQUEST_LINE is 8192); URLs with long filter lists stay far below.
MAX_REQUEST_LINE_BYTES = 8_192
# Request line plus all headers; more answers 431. Neutron accepts header lines up
# to 16 KiB (max_header_line, sized for PKI tokens): one such line plus ordinary
# headers fits; a client cannot park more than this per connection before its
# headers end (waitress' default, 256 KiB, is 8x more).
MAX_REQUEST_HEADER_BYTES = 32_768
# All REST connections at once. Past it a new client still gets in: the least
# recently active idle or trickling connection is closed. waitress' event loop
# walks every connection on each turn (measured: 0.5 ms a turn with 1000, 4.4 ms
# with 4000, 2 vCPU), and a request takes two or three turns: 4096 keeps that
# cost near 10 ms, for 4x the 1000 idle clients the server must shrug off.
MAX_CONNECTIONS = 4_096
# Connections one peer address (an IPv6 /64) may hold. A CLI or SDK uses one to a
# few, a connection pool ten (urllib3's default), a busy service a few dozen; past
# it the peer's own least recently active idle connection makes room, so a NAT or
# proxy in front only loses idle keep-alives (raise --rest-max-per-peer behind one).
MAX_CONNECTIONS_PER_PEER = 64
# An idle keep-alive connection is closed this long after its last answer (nginx
# keeps 75 s, waitress 120 s): clients reopen one in a round trip.
IDLE_TIMEOUT_S = 60
# A request must arrive whole (line, headers, body up to MAX_BODY_BYTES) within
# this of its first byte: at least 3.8 KB/s for the largest body. Real clients send
# a request in one go; Apache's mod_reqtimeout allows 20-40 s for headers alone.
REQUEST_DEADLINE_S = 30
# How often the timeouts above are checked (waitress' cleanup_interval, default 30).
CLEANUP_INTERVAL_S = 5
# The kernel's queue of connections not yet accepted (waitress' default); the
# server drains it in batches, so it only has to absorb a burst.
LISTEN_BACKLOG = 1_024
# At start the open-files soft limit (often 1024) is raised towards the hard limit,
# up to this: room for MAX_CONNECTIONS plus switches, chassis and databases.
NOFILE_TARGET = 65_536
# Descriptors kept for the rest of the process (switch and chassis connections,
# the database, logs, temporary files) when the open-files limit caps connections.
FD_RESERVE = 512
# Never cap REST connections below this, however low the open-files limit.
MIN_CONNECTIONS = 64

"""The OpenFlow app: switch up/down and replies, handed to the engine. Nothing else.

The engine is injected through `ENGINE` before `AppManager.run_apps` loads this
module, because os-ken instantiates apps itself.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Optional

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub
from os_ken.ofproto import ofproto_v1_3

from apps.guard import guarded
from controller.discovery import PROBE_INTERVAL, lldp_frame, restamp
from controller.pipeline import cookie_owner, is_punt_meter
from controller.punt import PACKET_INS, PUNT_DROPS
from controller.southbound.openflow import OpenFlowChannel

LOG = logging.getLogger(__name__)

PROBE_TICK = 0.05  # the probe loop wakes at least this often (urgent probes, timeouts)
GIL_SWITCH_INTERVAL = 0.001  # seconds; Python's default is 0.005

ENGINE: Optional[Any] = None  # controller.engine.Engine, set by the launcher

_REPLY_EVENTS = [
    ofp_event.EventOFPErrorMsg,
    ofp_event.EventOFPBarrierReply,
    ofp_event.EventOFPFlowStatsReply,
    ofp_event.EventOFPGroupDescStatsReply,
    ofp_event.EventOFPMeterConfigStatsReply,
    ofp_event.EventONFBundleCtrlMsg,
    ofp_event.EventOFPPortStatsReply,
    ofp_event.EventOFPMeterStatsReply,
    ofp_event.EventOFPRoleReply,
    ofp_event.EventOFPExperimenterStatsReply,  # flow monitor updates (controller/drift.py)
    ofp_event.EventOFPExperimenter,  # (its pauses)
]
PUNT_STATS_INTERVAL = 5.0  # seconds between reads of the punt meters' drop counters


class LoomOpenFlowApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every reply a push waits for (barrier, bundle commit) crosses three threads
        # (the switch's reader, this app's event loop, the switch's worker), each of
        # which must win the GIL from whatever compiles meanwhile; at the default 5 ms
        # switch interval a reroute after a cut spent most of its time in those waits.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        self.channels: dict[int, OpenFlowChannel] = {}
        self._probes: dict[tuple[int, int], bytes] = {}
        self.threads.append(hub.spawn(self._probe_loop))
        self.threads.append(hub.spawn(self._liveness_loop))
        self.threads.append(hub.spawn(self._punt_drops_loop))

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    @guarded
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            old = self.channels.get(dp.id)
            if old is not None:
                old.close()
                if ENGINE is not None:
                    ENGINE.switch_disconnected(old)
            channel = OpenFlowChannel(dp)
            self.channels[dp.id] = channel
            self._probes = {k: v for k, v in self._probes.items() if k[0] != dp.id}
            if ENGINE is not None:
                ENGINE.of_switch_up(dp.id, {no: (_name(p), _is_up(dp, p))
                                            for no, p in (dp.ports or {}).items()})
                ENGINE.switch_connected(channel)
        elif ev.state == DEAD_DISPATCHER and dp.id is not None:
            gone = self.channels.get(dp.id)
            if gone is not None and gone.datapath is dp:
                del self.channels[dp.id]
                gone.close()
                if ENGINE is not None:
                    ENGINE.switch_disconnected(gone)
                    ENGINE.of_switch_down(dp.id)

    @set_ev_cls(_REPLY_EVENTS, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @guarded
    def _reply(self, ev: Any) -> None:
        msg = ev.msg
        channel = self.channels.get(msg.datapath.id)
        if channel is not None and channel.datapath is msg.datapath:
            channel.deliver(msg)
        elif msg.msg_type == msg.datapath.ofproto.OFPT_ERROR:
            LOG.warning("error from switch %s: %s", msg.datapath.id, msg)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    @guarded
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        dp, desc = msg.datapath, msg.desc
        if ENGINE is None:
            return
        up = None if msg.reason == dp.ofproto.OFPPR_DELETE else _is_up(dp, desc)
        LOG.debug("switch %#x port %s (%d): %s", dp.id, _name(desc), desc.port_no,
                  "deleted" if up is None else "up" if up else "down")
        ENGINE.of_port(dp.id, desc.port_no, _name(desc), up)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _packet_in(self, ev: Any) -> None:
        # Punted (controller/punt.py): a guest port's DHCP requests and router
        # solicitations (cookie of the port;
        # the reply goes out of that port), ARP to a router's gateway MAC (gateway
        # chassis: the upstream's answers), LLDP probes (fabric switches); anything
        # else is a bug.
        msg = ev.msg
        if ENGINE is None:
            return
        data, dp = bytes(msg.data), msg.datapath
        dpid, in_port = dp.id, msg.match.get("in_port")
        if not _hook("is_master", lambda _: True)(dpid):
            return  # several instances: the switch's master answers (a slave gets none;
            # an instance whose slave request was refused may, until it is retried)
        if cookie_owner(msg.cookie)[0] == "port":
            for reply in _hook("punt_in", lambda *_: [])(dpid, msg.cookie, data):
                if in_port is not None:
                    dp.send(_packet_out(dp, in_port, reply))
            return
        if _hook("arp_in", lambda *_: False)(dpid, msg.match.get("metadata"), data):
            PACKET_INS.labels("upstream_arp").inc()
            return
        if in_port is not None and ENGINE.lldp_in(dpid, in_port, data):
            PACKET_INS.labels("lldp").inc()
            return
        PACKET_INS.labels("unexpected").inc()
        LOG.warning("unexpected packet-in from %#x (table %s, cookie %#x)", dpid,
                    msg.table_id, msg.cookie)

    def _probe_loop(self) -> None:
        """Send LLDP out of every up fabric port once per PROBE_INTERVAL, spread out.

        Each switch gets its probes in one send, at its own moment of the interval
        (not hundreds of packet-outs at once, queued behind each other and behind a
        push); ports that just came up are probed at once; and between sends the
        engine's discovery clock ticks (timeouts, hold-downs, rollout steps)."""
        while True:
            try:
                self._probe_round()
            except Exception:
                LOG.exception("LLDP probe round failed")
                hub.sleep(PROBE_TICK)

    def _probe_round(self) -> None:
        start = time.monotonic()
        if ENGINE is None:
            hub.sleep(PROBE_TICK)
            return
        self._send_arp_requests()
        by_switch: dict[int, list[int]] = defaultdict(list)
        for dpid, port_no in ENGINE.probe_targets():
            by_switch[dpid].append(port_no)
        dpids = sorted(by_switch)
        spacing = PROBE_INTERVAL / max(len(dpids), 1)
        i = 0
        while True:
            now = time.monotonic()
            while i < len(dpids) and now >= start + i * spacing:
                self._send_probes(dpids[i], by_switch[dpids[i]])
                i += 1
            urgent: dict[int, list[int]] = defaultdict(list)
            for dpid, port_no in _hook("urgent_probes", list)():
                urgent[dpid].append(port_no)
            for dpid, ports in sorted(urgent.items()):
                self._send_probes(dpid, ports)
            _hook("discovery_tick", lambda: None)()
            end = start + PROBE_INTERVAL
            if now >= end:
                return
            due = start + i * spacing if i < len(dpids) else end
            hub.sleep(max(0.0, min(PROBE_TICK, due - time.monotonic())))

    def _liveness_loop(self) -> None:
        """Read the rx counters of ports whose links' probes went missing (a few switches
        at most, and only then), so that discovery can tell a congested link, which
        still delivers frames, from a cut one. Its own thread: it waits for replies."""
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="rx-counters") as pool:
            while True:
                started = time.monotonic()
                try:
                    if ENGINE is not None:
                        # every suspect switch at once: one slow switch delays no other
                        jobs = [pool.submit(self._read_rx, dpid, set(ports))
                                for dpid, ports in sorted(_hook("lldp_suspects", dict)().items())]
                        wait(jobs, timeout=2 * PROBE_INTERVAL)
                except Exception:
                    LOG.exception("port counter round failed")
                hub.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - started)))

    def _punt_drops_loop(self) -> None:
        """Read what each switch's punt meters dropped (guests' DHCP beyond their rate,
        ARP floods at a gateway) into /metrics: one meter stats request per switch
        every PUNT_STATS_INTERVAL."""
        while True:
            hub.sleep(PUNT_STATS_INTERVAL)
            for dpid, channel in list(self.channels.items()):
                try:
                    self._read_punt_drops(dpid, channel)
                except Exception as exc:  # a busy or departing switch: next round
                    LOG.debug("switch %#x: meter counters unavailable: %s", dpid, exc)

    def _read_punt_drops(self, dpid: int, channel: OpenFlowChannel) -> None:
        if channel.closed.is_set():
            return
        dp = channel.datapath
        xid = channel.reserve_xids(1)
        msg = dp.ofproto_parser.OFPMeterStatsRequest(dp, 0, dp.ofproto.OFPM_ALL)
        msg.set_xid(xid)
        msg.serialize()
        replies = channel.call(bytes(msg.buf), xid, timeout=PUNT_STATS_INTERVAL)
        dropped = sum(band.packet_band_count for r in replies for st in r.body
                      if is_punt_meter(st.meter_id) for band in st.band_stats)
        PUNT_DROPS.labels(f"{dpid:016x}").set(dropped)

    def _read_rx(self, dpid: int, ports: set[int]) -> None:
        channel = self.channels.get(dpid)
        if channel is None or channel.closed.is_set() or ENGINE is None:
            return
        xid = channel.reserve_xids(1)
        try:
            replies = channel.call(_port_stats_request(channel.datapath, xid), xid,
                                   timeout=PROBE_INTERVAL * 2)
        except Exception as exc:  # a busy or departing switch: next round
            LOG.debug("switch %#x: port counters unavailable: %s", dpid, exc)
            return
        rx = {st.port_no: st.rx_packets for r in replies for st in r.body
              if st.port_no in ports}
        _hook("port_counters", lambda *_: None)(dpid, rx)

    def _send_arp_requests(self) -> None:
        """The gateway chassis' ARP requests for their upstream routers, and the periodic
        IPv6 router advertisements, when due (the engine paces them:
        controller/upstream_arp.py, controller/router_advert.py)."""
        master = _hook("is_master", lambda _: True)
        for dpid, port_no, frame in (*_hook("arp_requests", list)(), *_hook("ra_due", list)()):
            channel = self.channels.get(dpid)
            if channel is None or channel.closed.is_set() or not master(dpid):
                continue
            channel.datapath.send(_packet_out(channel.datapath, port_no, frame))

    def _send_probes(self, dpid: int, ports: list[int]) -> None:
        """One send with a packet-out per port. Skipped, not queued, when the switch's
        send queue is full (a push in progress): the probe loop must never wait on one
        busy switch, and discovery only counts probes that really went out."""
        channel = self.channels.get(dpid)
        if channel is None or channel.closed.is_set() or not _hook(
                "is_master", lambda _: True)(dpid):
            return  # (a slave's packet-outs are refused: another instance probes it)
        dp = channel.datapath
        queue = getattr(dp, "send_q", None)
        if queue is None or queue.full():
            LOG.debug("switch %#x: send queue full, LLDP probes skipped this round", dpid)
            return
        frames = []
        now = time.monotonic()  # the engine's discovery clock: it compares these stamps
        for port_no in ports:
            data = self._probes.get((dpid, port_no))
            if data is None:
                data = _packet_out(dp, port_no, lldp_frame(dpid, port_no))
                self._probes[(dpid, port_no)] = data
            frames.append(restamp(data, now))
        if dp.send(b"".join(frames)):
            _hook("probe_sent", lambda *_: None)(dpid, ports)


def _hook(name: str, default: Callable[..., Any]) -> Callable[..., Any]:
    """The engine's discovery hook `name`, or `default` for an engine without one (a
    benchmark's stand-in that manages no fabric)."""
    return getattr(ENGINE, name, None) or default


def _port_stats_request(dp: Any, xid: int) -> bytes:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    msg = parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def _name(desc: Any) -> str:
    name = desc.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def _is_up(dp: Any, desc: Any) -> bool:
    ofp = dp.ofproto
    return not (desc.state & ofp.OFPPS_LINK_DOWN) and not (desc.config & ofp.OFPPC_PORT_DOWN)


def _packet_out(dp: Any, port_no: int, frame: bytes) -> bytes:
    """A packet-out of one frame, an LLDP probe or an ARP request (a cold path: os-ken's
    classes are fine here)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    msg = parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                              in_port=ofp.OFPP_CONTROLLER,
                              actions=[parser.OFPActionOutput(port_no)], data=frame)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)

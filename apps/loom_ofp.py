"""The OpenFlow app: switch up/down and replies, handed to the engine. Nothing else.

The engine is injected through `ENGINE` before `AppManager.run_apps` loads this
module, because os-ken instantiates apps itself.
"""

from __future__ import annotations

import logging
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
from controller.discovery import PROBE_INTERVAL, lldp_frame
from controller.southbound.openflow import OpenFlowChannel

LOG = logging.getLogger(__name__)

ENGINE: Optional[Any] = None  # controller.engine.Engine, set by the launcher

_REPLY_EVENTS = [
    ofp_event.EventOFPErrorMsg,
    ofp_event.EventOFPBarrierReply,
    ofp_event.EventOFPFlowStatsReply,
    ofp_event.EventOFPGroupDescStatsReply,
    ofp_event.EventOFPMeterConfigStatsReply,
    ofp_event.EventONFBundleCtrlMsg,
]


class LoomOpenFlowApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channels: dict[int, OpenFlowChannel] = {}
        self._probes: dict[tuple[int, int], bytes] = {}
        self.threads.append(hub.spawn(self._probe_loop))

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
        ENGINE.of_port(dp.id, desc.port_no, _name(desc), up)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @guarded
    def _packet_in(self, ev: Any) -> None:
        # Only LLDP probes are punted (fabric switches); anything else is a bug.
        msg = ev.msg
        if ENGINE is not None and not ENGINE.lldp_in(msg.datapath.id, msg.match["in_port"],
                                                     bytes(msg.data)):
            LOG.warning("unexpected packet-in from %#x", msg.datapath.id)

    def _probe_loop(self) -> None:
        """Send LLDP out of every up fabric port, every PROBE_INTERVAL."""
        while True:
            try:
                if ENGINE is not None:
                    for dpid, port_no in ENGINE.probe_targets():
                        channel = self.channels.get(dpid)
                        if channel is None:
                            continue
                        data = self._probes.get((dpid, port_no))
                        if data is None:
                            data = _packet_out(channel.datapath, port_no,
                                               lldp_frame(dpid, port_no))
                            self._probes[(dpid, port_no)] = data
                        channel.datapath.send(data)
            except Exception:
                LOG.exception("LLDP probe round failed")
            hub.sleep(PROBE_INTERVAL)


def _name(desc: Any) -> str:
    name = desc.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def _is_up(dp: Any, desc: Any) -> bool:
    ofp = dp.ofproto
    return not (desc.state & ofp.OFPPS_LINK_DOWN) and not (desc.config & ofp.OFPPC_PORT_DOWN)


def _packet_out(dp: Any, port_no: int, frame: bytes) -> bytes:
    """A packet-out of one LLDP probe (a cold path: os-ken's classes are fine here)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    msg = parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                              in_port=ofp.OFPP_CONTROLLER,
                              actions=[parser.OFPActionOutput(port_no)], data=frame)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)

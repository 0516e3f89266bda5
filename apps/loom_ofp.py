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
from os_ken.ofproto import ofproto_v1_3

from apps.guard import guarded
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
            if ENGINE is not None:
                ENGINE.switch_connected(channel)
        elif ev.state == DEAD_DISPATCHER and dp.id is not None:
            gone = self.channels.get(dp.id)
            if gone is not None and gone.datapath is dp:
                del self.channels[dp.id]
                gone.close()
                if ENGINE is not None:
                    ENGINE.switch_disconnected(gone)

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
        # Ports come and go through OVSDB (iface-id, ofport); a status change only
        # asks for a recompile so nothing waits for the next OVSDB update.
        if ENGINE is not None:
            ENGINE.kick()

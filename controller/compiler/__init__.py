"""Pure compilation: (intent snapshot, topology view) -> desired state per switch.

No I/O, no clock, no randomness: the same input gives the same output, byte for
byte, which is what lets a restarted controller find nothing to change.
"""

from controller.compiler.core import DesiredSwitch, compile_all, compile_switch

__all__ = ["DesiredSwitch", "compile_all", "compile_switch"]


def clear_caches() -> None:
    """Forget memoised per-port and per-network flows (benchmarks measure cold compiles)."""
    from controller.compiler.acl import member_clause_flows, plain_rule_flows, port_guard_flows
    from controller.compiler.network import (
        arp_reply_flows,
        flood_flow,
        flood_from_remote_flow,
        nd_reply_flows,
    )
    from controller.compiler.overlay import remote_mac_flow, tunnel_in_flow
    from controller.compiler.ports import port_flows
    from controller.compiler.routing import resolve_flows, router_flows

    for fn in (port_flows, arp_reply_flows, nd_reply_flows, flood_flow, flood_from_remote_flow,
               tunnel_in_flow, remote_mac_flow, port_guard_flows, plain_rule_flows,
               member_clause_flows, router_flows, resolve_flows):
        fn.cache_clear()


__all__ += ["clear_caches"]

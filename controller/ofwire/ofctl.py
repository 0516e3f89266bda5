"""`ovs-ofctl` text for a Flow: the benchmark's baseline input and a debugging view.

`ovs-ofctl -O OpenFlow13 add-flow BR "$(to_ofctl(flow))"` installs exactly the flow
that `encode_flow_mod(flow, ADD, xid)` installs; the unit tests prove it by capturing
the bytes ovs-ofctl sends and comparing them with ours.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from controller import pipeline
from controller.flows import (
    Conjunction,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Group,
    GroupAction,
    MatchField,
    Meter,
    Nat,
    Output,
    PopVlan,
    PushVlan,
    RegMove,
    Resubmit,
    SetField,
    SetQueue,
    mac_text,
)
from controller.ofwire import consts as c
from controller.ofwire.fields import FIELDS
from controller.ofwire.model import Opaque, OpaqueMeter

_PORT_NAMES = {
    c.OFPP_IN_PORT: "IN_PORT",
    c.OFPP_TABLE: "TABLE",
    c.OFPP_NORMAL: "NORMAL",
    c.OFPP_FLOOD: "FLOOD",
    c.OFPP_ALL: "ALL",
    c.OFPP_LOCAL: "LOCAL",
}


def _table(name: str) -> int:
    tid = pipeline.TABLE_IDS.get(name)
    return int(name) if tid is None else tid


def _value(fmt: str, value: int) -> str:
    if fmt == "mac":
        return mac_text(value)
    if fmt == "ip4":
        return str(ipaddress.IPv4Address(value))
    if fmt == "ip6":
        return str(ipaddress.IPv6Address(value))
    if fmt == "hex":
        return hex(value)
    return str(value)


def _field_text(mf: MatchField) -> str:
    spec = FIELDS.get(mf.field)
    if spec is None:  # an unmodelled TLV read from a switch
        return f"{mf.field}={mf.value:#x}"
    if mf.mask is None:
        return f"{spec.text}={_value(spec.fmt, mf.value)}"
    mask_fmt = "hex" if spec.fmt == "int" else spec.fmt
    return f"{spec.text}={_value(spec.fmt, mf.value)}/{_value(mask_fmt, mf.mask)}"


def _subfield(field: str, ofs: int, n_bits: int) -> str:
    return f"{FIELDS[field].text}[{ofs}..{ofs + n_bits - 1}]"


def _nat_text(n: Nat) -> str:
    """As OVS's format_NAT: `nat(src=IP[-IP][:PORT[-PORT]][,persistent][,hash][,random])`."""
    text = f"{n.kind}={ipaddress.IPv4Address(n.ip_min)}"
    if n.ip_max is not None:
        text += f"-{ipaddress.IPv4Address(n.ip_max)}"
    if n.port_min is not None:
        text += f":{n.port_min}"
        if n.port_max is not None:
            text += f"-{n.port_max}"
    for flag in ("persistent", "hash", "random"):
        if getattr(n, flag):
            text += f",{flag}"
    return f"nat({text})"


def _ct_text(a: Ct) -> str:
    args = []
    if a.commit:
        args.append("commit")
    if a.zone_src is not None:
        args.append(f"zone={_subfield(a.zone_src, 0, 16)}")
    elif a.zone:
        args.append(f"zone={a.zone}")
    if a.table is not None:
        args.append(f"table={_table(a.table)}")
    if a.nat:
        args.append("nat")
    elif a.nat_spec is not None:
        args.append(_nat_text(a.nat_spec))
    if a.set_mark is not None:
        if a.mark_mask is None or a.mark_mask == 0xFFFFFFFF:
            args.append(f"exec(set_field:{a.set_mark:#x}->ct_mark)")
        else:
            args.append(f"exec(set_field:{a.set_mark:#x}/{a.mark_mask:#x}->ct_mark)")
    return f"ct({','.join(args)})"


def _action_text(a: Any) -> str:
    if isinstance(a, Output):
        if a.port == c.OFPP_CONTROLLER:
            return f"CONTROLLER:{a.max_len}"
        name = _PORT_NAMES.get(a.port)
        return name if name is not None else f"output:{a.port}"
    if isinstance(a, SetField):
        spec = FIELDS[a.field]
        return f"set_field:{_value(spec.fmt, a.value)}->{spec.text}"
    if isinstance(a, RegMove):
        return f"move:{_subfield(a.src, a.src_ofs, a.n_bits)}->" \
               f"{_subfield(a.dst, a.dst_ofs, a.n_bits)}"
    if isinstance(a, Resubmit):
        return f"resubmit(,{_table(a.table)})"
    if isinstance(a, GroupAction):
        return f"group:{a.group_id}"
    if isinstance(a, PushVlan):
        return f"push_vlan:{a.ethertype:#x}"
    if isinstance(a, PopVlan):
        return "pop_vlan"
    if isinstance(a, SetQueue):
        return f"set_queue:{a.queue_id}"
    if isinstance(a, Ct):
        return _ct_text(a)
    if isinstance(a, DecTtl):
        return "dec_ttl"
    if isinstance(a, CtClear):
        return "ct_clear"
    if isinstance(a, Conjunction):
        return f"conjunction({a.conj_id},{a.clause}/{a.n_clauses})"
    if isinstance(a, Opaque):
        return f"opaque_{a.kind}({a.raw.hex()})"  # not valid ovs-ofctl input, on purpose
    raise TypeError(f"not an action: {a!r}")


def actions_text(actions: Any, meter: Optional[int] = None, goto: Optional[str] = None,
                 write_metadata: Optional[tuple[int, int]] = None) -> str:
    parts = []
    if meter is not None:
        parts.append(f"meter:{meter}")
    parts.extend(_action_text(a) for a in actions)
    if write_metadata is not None:
        parts.append(f"write_metadata:{write_metadata[0]:#x}/{write_metadata[1]:#x}")
    if goto is not None:
        parts.append(f"goto_table:{_table(goto)}")
    return ",".join(parts) if parts else "drop"


def match_text(flow: Flow) -> str:
    return ",".join(_field_text(mf) for mf in flow.match)


def to_ofctl(flow: Flow) -> str:
    """`table=N,priority=P,cookie=0x..,<match>,actions=...` for `ovs-ofctl add-flow`.

    Fields appear in the Flow's canonical order (OVS does not care) under their
    ovs-ofctl names (`nw_src` for ipv4_src, `tun_id` for tunnel_id, ...).
    """
    head = f"table={_table(flow.table)},priority={flow.priority},cookie={flow.cookie:#x}"
    match = match_text(flow)
    acts = actions_text(flow.actions, flow.meter, flow.goto, flow.write_metadata)
    if match:
        return f"{head},{match},actions={acts}"
    return f"{head},actions={acts}"


def group_to_ofctl(group: Group) -> str:
    """`group_id=N,type=T,bucket=...` for `ovs-ofctl add-group`: how a group that
    drifted is shown (controller/drift.py), as `dump-groups` would show it."""
    buckets = []
    for b in group.buckets:
        head = []
        if b.weight:
            head.append(f"weight:{b.weight}")
        if b.watch_port != c.OFPP_ANY:
            head.append(f"watch_port:{b.watch_port}")
        if b.watch_group != c.OFPG_ANY:
            head.append(f"watch_group:{b.watch_group}")
        head.append(f"actions={actions_text(b.actions)}")
        buckets.append("bucket=" + ",".join(head))
    return ",".join([f"group_id={group.group_id}", f"type={group.type}", *buckets])


def meter_to_ofctl(meter: Meter | OpaqueMeter) -> str:
    """`meter=N,pktps,burst,band=type=drop,rate=R,burst_size=B` for `ovs-ofctl
    add-meter`; a meter Loom cannot model shows its flags and raw bytes instead."""
    if isinstance(meter, OpaqueMeter):
        return f"meter={meter.meter_id},flags={meter.flags:#x},opaque({meter.raw.hex()})"
    if meter.rate_kbps < 0:  # (the reconciler's stand-in for a meter it cannot model)
        return f"meter={meter.meter_id},<not a meter Loom writes>"
    unit = "pktps" if meter.pps else "kbps"
    return (f"meter={meter.meter_id},{unit},burst,band=type=drop,rate={meter.rate_kbps},"
            f"burst_size={meter.burst_kb}")

"""OpenFlow 1.3 encoders: `flows` dataclasses -> wire bytes, with `struct` only.

Why not os-ken's message classes: building and serialising one bundled flow_mod through
them costs ~50 us (bench/bench_encode.py; ~120 us with os-ken's send path, per
ANCHORS.md), so a 100k-flow push would spend 5-12 s in Python before OVS sees a byte.
Here a flow_mod is a handful of `Struct.pack` calls, and the bytes of each flow are
cached (keyed by the frozen `Flow`, so an equal flow from a later compile hits too): a
re-push, or a bundle that re-adds flows after a restart, only copies bytes and patches
the xids.

Layout choices follow what Open vSwitch itself sends and reports back (see
`fields.py`): match TLVs in OVS's order, NXM headers inside Nicira actions, masked
ct_mark writes as NXAST_REG_LOAD segments. The unit tests check every encoder
against os-ken's serialisers and against the bytes `ovs-ofctl` sends for
`to_ofctl(flow)`.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp13

from controller import pipeline
from controller.flows import (
    Action,
    Bucket,
    Conjunction,
    Ct,
    CtClear,
    DecTtl,
    Flow,
    Group,
    GroupAction,
    Match,
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
)
from controller.ofwire import consts as c
from controller.ofwire.fields import FIELDS, FieldSpec, parse_unknown_field_name
from controller.ofwire.model import Opaque

# ---------------------------------------------------------------- structs
HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!BBHIQQBBHHHIIIH2x")  # header + ofp_flow_mod fixed part: 48 bytes
_MATCH_HDR = struct.Struct("!HH")
_INSTR_HDR = struct.Struct("!HH4x")  # apply/write actions: type, len, pad
_GOTO = struct.Struct("!HHB3x")
_WRITE_METADATA = struct.Struct("!HH4xQQ")
_METER_INSTR = struct.Struct("!HHI")
_OUTPUT = struct.Struct("!HHIH6x")
_GROUP_ACT = struct.Struct("!HHI")
_PUSH_VLAN = struct.Struct("!HHH2x")
_POP_VLAN = struct.Struct("!HH4x").pack(c.OFPAT_POP_VLAN, 8)
_SET_QUEUE = struct.Struct("!HHI")
_DEC_NW_TTL = struct.Struct("!HH4x").pack(c.OFPAT_DEC_NW_TTL, 8)
_ACT_HDR = struct.Struct("!HH")
_NX_REG_MOVE = struct.Struct("!HHIHHHHII")  # 24 bytes
_NX_REG_LOAD = struct.Struct("!HHIHHIQ")  # 24 bytes
_NX_RESUBMIT_TABLE = struct.Struct("!HHIHHB3x")  # 16 bytes
_NX_CT = struct.Struct("!HHIHHIHB3xH")  # 24 bytes, nested actions follow
_NX_CONJUNCTION = struct.Struct("!HHIHBBI")  # 16 bytes
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_NX_NAT = struct.Struct("!HHIH2xHH")  # 16 bytes, then the ranges range_present names
_NX_NAT_PLAIN = _NX_NAT.pack(c.OFPAT_EXPERIMENTER, 16, c.NX_VENDOR_ID, c.NXAST_NAT, 0, 0)
_NX_CT_CLEAR = struct.Struct("!HHIH6x").pack(  # 16 bytes
    c.OFPAT_EXPERIMENTER, 16, c.NX_VENDOR_ID, c.NXAST_CT_CLEAR)
_EXPERIMENTER = struct.Struct("!BBHIII")  # header + experimenter + exp_type: 16 bytes
_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")  # 24 bytes
# bundle_add header (24 bytes) + inner message header (8 bytes)
_BUNDLE_ADD_HDR = struct.Struct("!BBHIIII2xHBBHI")
_MP_REQ = struct.Struct("!BBHIHH4x")  # header + multipart request header: 16 bytes
_FLOW_STATS_REQ = struct.Struct("!B3xII4xQQHH4x")  # + empty ofp_match: 40 bytes
_GROUP_MOD = struct.Struct("!BBHIHBxI")  # 16 bytes
_BUCKET = struct.Struct("!HHII4x")
_METER_MOD = struct.Struct("!BBHIHHI")  # 16 bytes
_METER_BAND_DROP = struct.Struct("!HHII4x")

BUNDLE_ADD_OVERHEAD = _BUNDLE_ADD_HDR.size - HEADER.size  # 24: what wraps a message
_ZERO_PAD = bytes(8)


# ---------------------------------------------------------------- small helpers
def _table_id(name: str) -> int:
    """Pipeline table id; a decoded flow from a foreign table carries its number as text."""
    tid = pipeline.TABLE_IDS.get(name)
    if tid is None:
        return int(name)
    return tid


# ---------------------------------------------------------------- match
def _tlv_spec(s: FieldSpec) -> tuple[int, bytes, bytes, int, bytes]:
    """(order, exact header, masked header, nbytes, suffix of an exact TLV).

    A field OVS writes exact as value/mask (ct_state) gets the masked header and the
    mask as suffix for its exact form, so our bytes are the ones OVS reports back.
    """
    masked = s.masked_header.to_bytes(4, "big")
    if s.exact_mask is not None:
        return s.order, masked, masked, s.nbytes, s.exact_mask.to_bytes(s.nbytes, "big")
    return s.order, s.header.to_bytes(4, "big"), masked, s.nbytes, b""


_TLV: dict[str, tuple[int, bytes, bytes, int, bytes]] = {
    s.name: _tlv_spec(s) for s in FIELDS.values()
}


def encode_oxm(mf: MatchField) -> tuple[int, bytes]:
    """(OVS order, TLV bytes) of one match field."""
    spec = _TLV.get(mf.field)
    if spec is None:
        header = parse_unknown_field_name(mf.field)
        if header is None:
            raise ValueError(f"unknown match field {mf.field!r}")
        # an unmodelled TLV read from a switch: value is its whole payload
        return 1000, header.to_bytes(4, "big") + mf.value.to_bytes(header & 0xFF, "big")
    order, hdr, mhdr, n, exact = spec
    if mf.mask is None:
        return order, hdr + mf.value.to_bytes(n, "big") + exact
    return order, mhdr + mf.value.to_bytes(n, "big") + mf.mask.to_bytes(n, "big")


_EMPTY_MATCH = _MATCH_HDR.pack(c.OFPMT_OXM, 4) + bytes(4)


def encode_match(match: Match) -> bytes:
    """ofp_match (type OXM) with its TLVs in Open vSwitch's order, padded to 8 bytes."""
    if not match:
        return _EMPTY_MATCH
    tlvs = []
    get = _TLV.get
    for mf in match:
        spec = get(mf.field)
        if spec is None:
            tlvs.append(encode_oxm(mf))
            continue
        order, hdr, mhdr, n, exact = spec
        if mf.mask is None:
            tlvs.append((order, hdr + mf.value.to_bytes(n, "big") + exact))
        else:
            tlvs.append((order, mhdr + mf.value.to_bytes(n, "big") + mf.mask.to_bytes(n, "big")))
    if len(tlvs) > 1:
        tlvs.sort()
    body = b"".join([t for _, t in tlvs])
    length = 4 + len(body)
    pad = -length % 8
    return _MATCH_HDR.pack(c.OFPMT_OXM, length) + body + _ZERO_PAD[:pad]


# ---------------------------------------------------------------- actions
def _set_field(field: str, value: int) -> bytes:
    spec = FIELDS[field]
    hdr, n = spec.header.to_bytes(4, "big"), spec.nbytes
    if field == "in_port":
        # OVS writes in_port as the 16-bit NXM_OF_IN_PORT in a set_field (and refuses
        # the 32-bit OXM there, OFPBAC_BAD_SET_ARGUMENT), as ovs-ofctl sends it.
        hdr, n = spec.nx_header.to_bytes(4, "big"), spec.nxm_nbytes
    body = hdr + value.to_bytes(n, "big")
    length = (4 + len(body) + 7) & ~7
    return _ACT_HDR.pack(c.OFPAT_SET_FIELD, length) + body + _ZERO_PAD[: length - 4 - len(body)]


def _enc_output(a: Output) -> bytes:
    return _OUTPUT.pack(c.OFPAT_OUTPUT, 16, a.port, a.max_len)


def _enc_set_field(a: SetField) -> bytes:
    return _set_field(a.field, a.value)


def _enc_reg_move(a: RegMove) -> bytes:
    return _NX_REG_MOVE.pack(c.OFPAT_EXPERIMENTER, 24, c.NX_VENDOR_ID, c.NXAST_REG_MOVE,
                             a.n_bits, a.src_ofs, a.dst_ofs,
                             FIELDS[a.src].nx_header, FIELDS[a.dst].nx_header)


def _enc_resubmit(a: Resubmit) -> bytes:
    return _NX_RESUBMIT_TABLE.pack(c.OFPAT_EXPERIMENTER, 16, c.NX_VENDOR_ID,
                                   c.NXAST_RESUBMIT_TABLE, c.NXAST_RESUBMIT_IN_PORT,
                                   _table_id(a.table))


def _enc_group(a: GroupAction) -> bytes:
    return _GROUP_ACT.pack(c.OFPAT_GROUP, 8, a.group_id)


def _enc_push_vlan(a: PushVlan) -> bytes:
    return _PUSH_VLAN.pack(c.OFPAT_PUSH_VLAN, 8, a.ethertype)


def _enc_pop_vlan(a: PopVlan) -> bytes:
    return _POP_VLAN


def _enc_set_queue(a: SetQueue) -> bytes:
    return _SET_QUEUE.pack(c.OFPAT_SET_QUEUE, 8, a.queue_id)


_CT_MARK_NX = FIELDS["ct_mark"].nx_header
_U32 = 0xFFFFFFFF


def load_segments(value: int, mask: int) -> list[tuple[int, int, int]]:
    """(ofs, n_bits, value) per contiguous run of 1-bits in `mask`, lowest first.

    This is how OVS (`set_field_to_nxast`) writes a masked set_field in OF1.3: one
    NXAST_REG_LOAD per run, since OFPAT_SET_FIELD may not carry a mask before OF1.5.
    """
    out = []
    ofs = 0
    while mask >> ofs:
        if not (mask >> ofs) & 1:
            ofs += 1
            continue
        n = 0
        while (mask >> (ofs + n)) & 1:
            n += 1
        out.append((ofs, n, (value >> ofs) & ((1 << n) - 1)))
        ofs += n
    return out


def _reg_load(ofs: int, n_bits: int, dst_header: int, value: int) -> bytes:
    return _NX_REG_LOAD.pack(c.OFPAT_EXPERIMENTER, 24, c.NX_VENDOR_ID, c.NXAST_REG_LOAD,
                             (ofs << 6) | (n_bits - 1), dst_header, value)


# NXAST_NAT flags and range_present bits (OVS include/openvswitch/ofp-actions.h,
# nx_nat_flags / nx_nat_range)
NX_NAT_F_SRC = 1
NX_NAT_F_DST = 2
NX_NAT_F_PERSISTENT = 4
NX_NAT_F_PROTO_HASH = 8
NX_NAT_F_PROTO_RANDOM = 16
NX_NAT_RANGE_IPV4_MIN = 1
NX_NAT_RANGE_IPV4_MAX = 2
NX_NAT_RANGE_IPV6_MIN = 4
NX_NAT_RANGE_IPV6_MAX = 8
NX_NAT_RANGE_PROTO_MIN = 16
NX_NAT_RANGE_PROTO_MAX = 32


def _enc_nat(n: Nat) -> bytes:
    """As OVS's encode_NAT: the IPv4 minimum, then the maximum, then the port
    minimum and maximum, each only when present, padded to 8 bytes."""
    flags = NX_NAT_F_SRC if n.kind == "src" else NX_NAT_F_DST
    if n.persistent:
        flags |= NX_NAT_F_PERSISTENT
    if n.hash:
        flags |= NX_NAT_F_PROTO_HASH
    if n.random:
        flags |= NX_NAT_F_PROTO_RANDOM
    body = _BE32.pack(n.ip_min)
    present = NX_NAT_RANGE_IPV4_MIN
    if n.ip_max is not None:
        body += _BE32.pack(n.ip_max)
        present |= NX_NAT_RANGE_IPV4_MAX
    if n.port_min is not None:
        body += _BE16.pack(n.port_min)
        present |= NX_NAT_RANGE_PROTO_MIN
        if n.port_max is not None:
            body += _BE16.pack(n.port_max)
            present |= NX_NAT_RANGE_PROTO_MAX
    body += bytes(-len(body) % 8)
    return _NX_NAT.pack(c.OFPAT_EXPERIMENTER, 16 + len(body), c.NX_VENDOR_ID, c.NXAST_NAT,
                        flags, present) + body


def _enc_ct(a: Ct) -> bytes:
    nested = b""
    if a.nat_spec is not None:
        if a.nat:
            raise ValueError("ct: plain nat and nat(src/dst=...) are exclusive")
        nested += _enc_nat(a.nat_spec)
    elif a.nat:
        nested += _NX_NAT_PLAIN
    if a.set_mark is not None:
        mask = _U32 if a.mark_mask is None else a.mark_mask & _U32
        if mask == _U32:
            nested += _set_field("ct_mark", a.set_mark & _U32)
        else:
            nested += b"".join(_reg_load(ofs, n, _CT_MARK_NX, v)
                               for ofs, n, v in load_segments(a.set_mark, mask))
    if a.zone_src is not None:
        zone_src, zone = FIELDS[a.zone_src].nx_header, 15  # ofs 0, 16 bits
    else:
        zone_src, zone = 0, a.zone
    recirc = c.NX_CT_RECIRC_NONE if a.table is None else _table_id(a.table)
    head = _NX_CT.pack(c.OFPAT_EXPERIMENTER, 24 + len(nested), c.NX_VENDOR_ID, c.NXAST_CT,
                       c.NX_CT_F_COMMIT if a.commit else 0, zone_src, zone, recirc, 0)
    return head + nested


def _enc_conjunction(a: Conjunction) -> bytes:
    return _NX_CONJUNCTION.pack(c.OFPAT_EXPERIMENTER, 16, c.NX_VENDOR_ID, c.NXAST_CONJUNCTION,
                                a.clause - 1, a.n_clauses, a.conj_id)


def _enc_dec_ttl(a: DecTtl) -> bytes:
    return _DEC_NW_TTL


def _enc_ct_clear(a: CtClear) -> bytes:
    return _NX_CT_CLEAR


def _enc_opaque(a: Opaque) -> bytes:
    if a.kind != "action":
        raise ValueError(f"cannot encode an opaque {a.kind}")
    return a.raw


_ACTION_ENCODERS: dict[type, Callable[[object], bytes]] = {
    Output: _enc_output,  # type: ignore[dict-item]
    SetField: _enc_set_field,  # type: ignore[dict-item]
    RegMove: _enc_reg_move,  # type: ignore[dict-item]
    Resubmit: _enc_resubmit,  # type: ignore[dict-item]
    GroupAction: _enc_group,  # type: ignore[dict-item]
    PushVlan: _enc_push_vlan,  # type: ignore[dict-item]
    PopVlan: _enc_pop_vlan,  # type: ignore[dict-item]
    SetQueue: _enc_set_queue,  # type: ignore[dict-item]
    Ct: _enc_ct,  # type: ignore[dict-item]
    Conjunction: _enc_conjunction,  # type: ignore[dict-item]
    DecTtl: _enc_dec_ttl,  # type: ignore[dict-item]
    CtClear: _enc_ct_clear,  # type: ignore[dict-item]
    Opaque: _enc_opaque,  # type: ignore[dict-item]
}


def encode_action(action: Action) -> bytes:
    return _ACTION_ENCODERS[type(action)](action)


def encode_actions(actions: Sequence[Action]) -> bytes:
    enc = _ACTION_ENCODERS
    return b"".join([enc[type(a)](a) for a in actions])


def encode_instructions(flow: Flow) -> bytes:
    """Instructions in OF1.3 canonical order: meter, apply_actions, write_metadata, goto.

    A flow with none of them has no instructions at all, which OpenFlow reads as drop.
    """
    parts = []
    if flow.meter is not None:
        parts.append(_METER_INSTR.pack(c.OFPIT_METER, 8, flow.meter))
    if flow.actions:
        enc = _ACTION_ENCODERS
        acts = b"".join([enc[type(a)](a) for a in flow.actions])
        parts.append(_INSTR_HDR.pack(c.OFPIT_APPLY_ACTIONS, 8 + len(acts)))
        parts.append(acts)
    if flow.write_metadata is not None:
        value, mask = flow.write_metadata
        parts.append(_WRITE_METADATA.pack(c.OFPIT_WRITE_METADATA, 24, value, mask))
    if flow.goto is not None:
        parts.append(_GOTO.pack(c.OFPIT_GOTO_TABLE, 8, _table_id(flow.goto)))
    return b"".join(parts)


# ---------------------------------------------------------------- flow_mod
def _flow_mod(flow: Flow, command: int, xid: int) -> bytes:
    match = encode_match(flow.match)
    instr = b"" if command in (c.OFPFC_DELETE, c.OFPFC_DELETE_STRICT) else \
        encode_instructions(flow)
    length = _FLOW_MOD.size + len(match) + len(instr)
    head = _FLOW_MOD.pack(c.OFP_VERSION, c.OFPT_FLOW_MOD, length, xid, flow.cookie, 0,
                          _table_id(flow.table), command, 0, 0, flow.priority,
                          c.OFP_NO_BUFFER, c.OFPP_ANY, c.OFPG_ANY, 0)
    return head + match + instr


# Flow -> the complete bundle_add message of its ADD flow_mod, with xid, bundle id and
# flags all zero (patched per send). Insertion-ordered; the oldest quarter goes when full.
_ADD_CACHE: dict[Flow, bytes] = {}
_cache_max = 1 << 18


def set_cache_size(max_flows: int) -> None:
    """Bound the per-flow byte cache (default 262144 flows, roughly 60 MB at most)."""
    global _cache_max
    _cache_max = max(1, max_flows)
    _trim_cache()


def clear_cache() -> None:
    _ADD_CACHE.clear()


def cache_info() -> dict[str, int]:
    return {"flows": len(_ADD_CACHE), "max": _cache_max}


def _trim_cache() -> None:
    if len(_ADD_CACHE) >= _cache_max:
        drop = max(1, len(_ADD_CACHE) - _cache_max + _cache_max // 4)
        for key in list(islice(_ADD_CACHE, drop)):
            del _ADD_CACHE[key]


def _bundle_add_template(inner: bytes) -> bytes:
    """A bundle_add carrying `inner`, with xid, bundle id and flags left zero."""
    return _EXPERIMENTER.pack(c.OFP_VERSION, c.OFPT_EXPERIMENTER,
                              BUNDLE_ADD_OVERHEAD + len(inner), 0, c.ONF_EXPERIMENTER_ID,
                              c.ONF_ET_BUNDLE_ADD_MESSAGE) + _ZERO_PAD + inner


# bundle_add header (24 bytes) + the fixed part of the flow_mod it carries (48 bytes)
_ADD_HEAD = struct.Struct("!BBHIIII2xH" + "BBHIQQBBHHHIIIH2x")
_TABLE_IDS = pipeline.TABLE_IDS


def _build_add(flow: Flow) -> bytes:
    """The bundle_add of `flow`'s ADD flow_mod, all xids, bundle id and flags zero."""
    match = encode_match(flow.match)
    instr = encode_instructions(flow)
    inner = 48 + len(match) + len(instr)
    table = _TABLE_IDS.get(flow.table)
    head = _ADD_HEAD.pack(
        c.OFP_VERSION, c.OFPT_EXPERIMENTER, 24 + inner, 0, c.ONF_EXPERIMENTER_ID,
        c.ONF_ET_BUNDLE_ADD_MESSAGE, 0, 0,
        c.OFP_VERSION, c.OFPT_FLOW_MOD, inner, 0, flow.cookie, 0,
        _table_id(flow.table) if table is None else table, c.OFPFC_ADD, 0, 0, flow.priority,
        c.OFP_NO_BUFFER, c.OFPP_ANY, c.OFPG_ANY, 0)
    return head + match + instr


def _add_template(flow: Flow) -> bytes:
    tpl = _ADD_CACHE.get(flow)
    if tpl is None:
        tpl = _store(flow)
    return tpl


def _store(flow: Flow) -> bytes:
    tpl = _build_add(flow)
    if len(_ADD_CACHE) >= _cache_max:
        _trim_cache()
    _ADD_CACHE[flow] = tpl
    return tpl


def encode_flow_mod(flow: Flow, command: int, xid: int) -> bytes:
    """One flow_mod. ADD (cached) and DELETE_STRICT are what the reconciler sends.

    ADD: buffer NO_BUFFER, no timeouts, flags 0, out_port/out_group ANY. DELETE and
    DELETE_STRICT: table, priority, match and cookie (cookie_mask 0, so the cookie
    does not filter), no instructions.
    """
    if command == c.OFPFC_ADD:
        msg = bytearray(memoryview(_add_template(flow))[BUNDLE_ADD_OVERHEAD:])
        struct.pack_into("!I", msg, 4, xid)
        return bytes(msg)
    return _flow_mod(flow, command, xid)


# ---------------------------------------------------------------- bundles
def _bundle_ctrl(xid: int, bundle_id: int, ctrl_type: int, flags: int) -> bytes:
    return _BUNDLE_CTRL.pack(c.OFP_VERSION, c.OFPT_EXPERIMENTER, _BUNDLE_CTRL.size, xid,
                             c.ONF_EXPERIMENTER_ID, c.ONF_ET_BUNDLE_CONTROL, bundle_id,
                             ctrl_type, flags)


def bundle_open(xid: int, bundle_id: int, flags: int = c.BUNDLE_FLAGS) -> bytes:
    return _bundle_ctrl(xid, bundle_id, c.ONF_BCT_OPEN_REQUEST, flags)


def bundle_commit(xid: int, bundle_id: int, flags: int = c.BUNDLE_FLAGS) -> bytes:
    return _bundle_ctrl(xid, bundle_id, c.ONF_BCT_COMMIT_REQUEST, flags)


def bundle_discard(xid: int, bundle_id: int, flags: int = c.BUNDLE_FLAGS) -> bytes:
    return _bundle_ctrl(xid, bundle_id, c.ONF_BCT_DISCARD_REQUEST, flags)


def bundle_add(xid: int, bundle_id: int, flags: int, inner: bytes) -> bytes:
    """Wrap one message in a bundle_add. The inner xid is set to `xid`: the OF1.3
    bundle extension (section 3.3) requires the two to match, and OVS checks it."""
    return _BUNDLE_ADD_HDR.pack(c.OFP_VERSION, c.OFPT_EXPERIMENTER, len(inner) + 24, xid,
                                c.ONF_EXPERIMENTER_ID, c.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id,
                                flags, inner[0], inner[1], len(inner), xid) + inner[8:]


def encode_bundle(bundle_id: int, adds: Sequence[Flow], deletes: Sequence[Flow],
                  first_xid: int, flags: int = c.BUNDLE_FLAGS) -> tuple[bytes, int]:
    """One bytes object: bundle open, deletes, adds, commit; and the next free xid.

    xids run first_xid (open), first_xid+1 ... (one per flow, deletes first),
    next_xid-1 (commit), so an error reply names the flow it is about. Deletes go
    first so that a flow whose key stays but whose body changes is never deleted
    after its replacement was added (an ADD of an existing key replaces it anyway).
    Adds come from the per-flow cache: the only per-flow work on a cache hit is one
    `pack_into` of the xids and bundle id.

    The cyclic garbage collector is paused meanwhile (nothing here makes cycles; its
    collections were ~15% of a cold 100k-flow encode).
    """
    if not gc.isenabled():
        return _encode_bundle(bundle_id, adds, deletes, first_xid, flags)
    gc.disable()
    try:
        return _encode_bundle(bundle_id, adds, deletes, first_xid, flags)
    finally:
        gc.enable()


def _encode_bundle(bundle_id: int, adds: Sequence[Flow], deletes: Sequence[Flow],
                   first_xid: int, flags: int) -> tuple[bytes, int]:
    mask = 0xFFFFFFFF
    xid = first_xid & mask
    parts = [bundle_open(xid, bundle_id, flags)]
    for f in deletes:
        parts.append(_bundle_add_template(_flow_mod(f, c.OFPFC_DELETE_STRICT, 0)))
    get = _ADD_CACHE.get
    for f in adds:
        tpl = get(f)
        if tpl is None:
            tpl = _store(f)
        parts.append(tpl)
    n = len(parts) - 1
    commit_xid = (first_xid + n + 1) & mask
    parts.append(bundle_commit(commit_xid, bundle_id, flags))
    buf = bytearray(b"".join(parts))
    patch = _BUNDLE_ADD_HDR.pack_into
    off = _BUNDLE_CTRL.size
    x = first_xid + 1
    version, experimenter, onf, add_message = c.OFP_VERSION, c.OFPT_EXPERIMENTER, \
        c.ONF_EXPERIMENTER_ID, c.ONF_ET_BUNDLE_ADD_MESSAGE
    for i in range(1, n + 1):
        xi = x & mask
        length = len(parts[i])
        patch(buf, off, version, experimenter, length, xi, onf, add_message, bundle_id, flags,
              version, c.OFPT_FLOW_MOD, length - 24, xi)
        off += length
        x += 1
    return bytes(buf), (first_xid + n + 2) & mask


def encode_bundle_chunks(bundle_id: int, adds: Sequence[Flow], deletes: Sequence[Flow],
                         first_xid: int, flags: int = c.BUNDLE_FLAGS,
                         chunk: int = 4096, with_open: bool = True) -> Iterator[bytes]:
    """The bundle of `encode_bundle` without its commit, as a stream of chunks.

    Sending chunk by chunk lets ovs-vswitchd work through the first messages while
    the rest are still being encoded, instead of idling until the whole bundle is
    built; xids are numbered exactly as `encode_bundle` numbers them, so the commit
    is `bundle_commit(first_xid + len(deletes) + len(adds) + 1, ...)`. With
    `with_open=False` the open is left out (the caller opened the bundle and put
    other messages, e.g. group mods, in it first) but the numbering is unchanged.
    """
    mask = 0xFFFFFFFF
    if with_open:
        yield bundle_open(first_xid & mask, bundle_id, flags)
    version, experimenter, onf, add_message = c.OFP_VERSION, c.OFPT_EXPERIMENTER, \
        c.ONF_EXPERIMENTER_ID, c.ONF_ET_BUNDLE_ADD_MESSAGE
    patch = _BUNDLE_ADD_HDR.pack_into
    get = _ADD_CACHE.get
    x = first_xid + 1
    n_del = len(deletes)
    total = n_del + len(adds)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, total, chunk):
            parts = []
            for i in range(start, min(start + chunk, total)):
                if i < n_del:
                    parts.append(_bundle_add_template(
                        _flow_mod(deletes[i], c.OFPFC_DELETE_STRICT, 0)))
                else:
                    f = adds[i - n_del]
                    tpl = get(f)
                    parts.append(tpl if tpl is not None else _store(f))
            buf = bytearray(b"".join(parts))
            off = 0
            for part in parts:
                xi = x & mask
                length = len(part)
                patch(buf, off, version, experimenter, length, xi, onf, add_message, bundle_id,
                      flags, version, c.OFPT_FLOW_MOD, length - 24, xi)
                off += length
                x += 1
            yield bytes(buf)
    finally:
        if gc_was_enabled:
            gc.enable()


# ---------------------------------------------------------------- other requests
def barrier_request(xid: int) -> bytes:
    return HEADER.pack(c.OFP_VERSION, c.OFPT_BARRIER_REQUEST, 8, xid)


def flow_stats_request(xid: int, table_id: int = c.OFPTT_ALL) -> bytes:
    """OFPMP_FLOW request for every flow (all tables, any port/group, cookie mask 0)."""
    return _MP_REQ.pack(c.OFP_VERSION, c.OFPT_MULTIPART_REQUEST, 56, xid, c.OFPMP_FLOW, 0) + \
        _FLOW_STATS_REQ.pack(table_id, c.OFPP_ANY, c.OFPG_ANY, 0, 0, c.OFPMT_OXM, 4)


def group_desc_request(xid: int) -> bytes:
    return _MP_REQ.pack(c.OFP_VERSION, c.OFPT_MULTIPART_REQUEST, 16, xid, c.OFPMP_GROUP_DESC, 0)


def meter_config_request(xid: int, meter_id: int = c.OFPM_ALL) -> bytes:
    return _MP_REQ.pack(c.OFP_VERSION, c.OFPT_MULTIPART_REQUEST, 24, xid,
                        c.OFPMP_METER_CONFIG, 0) + struct.pack("!I4x", meter_id)


# (os-ken names the ONF flow monitor's numbers; it cannot encode the request OVS takes)
ONF_EXPERIMENTER_ID = ofproto_common.ONF_EXPERIMENTER_ID
ONFMP_FLOW_MONITOR = ofp13.ONFMP_FLOW_MONITOR
ONFFMF_ADD, ONFFMF_DELETE = ofp13.ONFFMF_ADD, ofp13.ONFFMF_DELETE
ONFFMF_MODIFY, ONFFMF_ACTIONS = ofp13.ONFFMF_MODIFY, ofp13.ONFFMF_ACTIONS
OFPMP_EXPERIMENTER = ofp13.OFPMP_EXPERIMENTER


def flow_monitor_request(xid: int, monitor_id: int = 1) -> bytes:
    """ONF flow monitor (EXT-187, OpenFlow 1.3's `ovs-ofctl monitor watch:`) on every
    table: the switch then sends an update, with the flow and its instructions
    (ONFFMF_ACTIONS), whenever a flow is added, deleted or modified by anyone but this
    connection (no ONFFMF_OWN), and nothing
    for the flows it holds now (no ONFFMF_INITIAL). Loom's drift detection.

    OVS 3.1 wants the match as an OXM `ofp_match` with its header (an empty one:
    type 1, length 4, padded to 8), `match_len` 4; without it, it answers with an
    unparseable error. Its updates come as multipart replies with xid 0, not the
    request's."""
    flags = ONFFMF_ADD | ONFFMF_DELETE | ONFFMF_MODIFY | ONFFMF_ACTIONS
    body = struct.pack("!IHHIB3x", monitor_id, flags,
                       4, c.OFPP_ANY, c.OFPTT_ALL) + struct.pack("!HH4x", c.OFPMT_OXM, 4)
    return _MP_REQ.pack(c.OFP_VERSION, c.OFPT_MULTIPART_REQUEST, 24 + len(body), xid,
                        OFPMP_EXPERIMENTER, 0) + struct.pack(
        "!II", ONF_EXPERIMENTER_ID, ONFMP_FLOW_MONITOR) + body


# ---------------------------------------------------------------- groups and meters
def _encode_bucket(b: Bucket) -> bytes:
    acts = encode_actions(b.actions)
    return _BUCKET.pack(16 + len(acts), b.weight, b.watch_port, b.watch_group) + acts


def encode_group_mod(group: Group, command: int, xid: int) -> bytes:
    """OFPT_GROUP_MOD; a DELETE carries the type but no buckets."""
    gtype = c.GROUP_TYPES.get(group.type)
    if gtype is None:
        gtype = int(group.type)  # a decoded group of a type Loom does not name
    buckets = b"" if command == c.OFPGC_DELETE else \
        b"".join([_encode_bucket(b) for b in group.buckets])
    return _GROUP_MOD.pack(c.OFP_VERSION, c.OFPT_GROUP_MOD, 16 + len(buckets), xid, command,
                           gtype, group.group_id) + buckets


METER_FLAGS = c.OFPMF_KBPS | c.OFPMF_BURST
METER_FLAGS_PPS = c.OFPMF_PKTPS | c.OFPMF_BURST


def meter_flags(meter: Meter) -> int:
    return METER_FLAGS_PPS if meter.pps else METER_FLAGS


def encode_meter_mod(meter: Meter, command: int, xid: int) -> bytes:
    """OFPT_METER_MOD: kbps (or packets per second) with a burst, one drop band; a
    DELETE carries no band.

    Meters go outside bundles: OVS rejects meter_mods inside one.
    """
    if command == c.OFPMC_DELETE:
        return _METER_MOD.pack(c.OFP_VERSION, c.OFPT_METER_MOD, 16, xid, command, 0,
                               meter.meter_id)
    band = _METER_BAND_DROP.pack(c.OFPMBT_DROP, 16, meter.rate_kbps, meter.burst_kb)
    return _METER_MOD.pack(c.OFP_VERSION, c.OFPT_METER_MOD, 32, xid, command,
                           meter_flags(meter), meter.meter_id) + band


def encode_header(msg_type: int, xid: int, body: bytes = b"") -> bytes:
    return HEADER.pack(c.OFP_VERSION, msg_type, 8 + len(body), xid) + body


# ---------------------------------------------------------------- replies (fake switches)
_FLOW_STATS_ENTRY = struct.Struct("!HBxIIHHHH4xQQQ")  # 48 bytes
_MP_REPLY = struct.Struct("!BBHIHH4x")
MAX_MULTIPART_BODY = 0xFFFF - _MP_REPLY.size


def _multipart_replies(xid: int, mp_type: int, entries: Sequence[bytes]) -> list[bytes]:
    """Entries packed into as few OFPT_MULTIPART_REPLY messages as fit in 64 KiB,
    all but the last flagged REPLY_MORE, as a switch sends them."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for e in entries:
        if size + len(e) > MAX_MULTIPART_BODY and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(e)
        size += len(e)
    out = []
    for i, chunk in enumerate(chunks):
        body = b"".join(chunk)
        flags = c.OFPMPF_REPLY_MORE if i < len(chunks) - 1 else 0
        out.append(_MP_REPLY.pack(c.OFP_VERSION, c.OFPT_MULTIPART_REPLY, 16 + len(body), xid,
                                  mp_type, flags) + body)
    return out


def flow_stats_entry(flow: Flow, packet_count: int = 0, byte_count: int = 0,
                     duration: float = 0.0) -> bytes:
    """One ofp_flow_stats entry as OVS would report `flow` (for fake switches, tests
    and benchmarks: Loom itself never sends one)."""
    tail = _add_template(flow)[BUNDLE_ADD_OVERHEAD + _FLOW_MOD.size:]
    sec = int(duration)
    return _FLOW_STATS_ENTRY.pack(48 + len(tail), _table_id(flow.table), sec,
                                  int((duration - sec) * 1e9), flow.priority, 0, 0, 0,
                                  flow.cookie, packet_count, byte_count) + tail


def flow_stats_reply(xid: int, flows: Sequence[Flow]) -> list[bytes]:
    """The OFPMP_FLOW reply messages a switch holding `flows` sends."""
    return _multipart_replies(xid, c.OFPMP_FLOW, [flow_stats_entry(f) for f in flows])


def group_desc_reply(xid: int, groups: Sequence[Group]) -> list[bytes]:
    entries = []
    for g in groups:
        mod = encode_group_mod(g, c.OFPGC_ADD, 0)
        entries.append(struct.pack("!HBxI", len(mod) - 8, mod[10], g.group_id) + mod[16:])
    return _multipart_replies(xid, c.OFPMP_GROUP_DESC, entries)


def meter_config_reply(xid: int, meters: Sequence[Meter]) -> list[bytes]:
    entries = []
    for m in meters:
        mod = encode_meter_mod(m, c.OFPMC_ADD, 0)
        entries.append(struct.pack("!HHI", len(mod) - 8, meter_flags(m), m.meter_id) + mod[16:])
    return _multipart_replies(xid, c.OFPMP_METER_CONFIG, entries)

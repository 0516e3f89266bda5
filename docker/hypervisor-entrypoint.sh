#!/bin/sh
# Start one Loom hypervisor inside a container; stays in the foreground until stopped.
#
#   LOOM_ENCAP_IP      (required) this chassis' underlay address, already on one of the
#                      container's interfaces (docker-compose: ipv4_address on "underlay")
#   LOOM_CHASSIS_NAME  external_ids:system-id (default: the hostname)
#   LOOM_OVSDB_REMOTE  where OVSDB listens for the controller (default: ptcp:6640)
#   LOOM_PEER_ENCAP_IPS  (optional) the other chassis' underlay addresses, space
#                      separated: their br-phy MACs are put into OVS's tunnel
#                      neighbour cache (tnl/neigh/set) as soon as they answer, so the
#                      first packet into each tunnel is not dropped while OVS ARPs
#
# The interface holding LOOM_ENCAP_IP becomes a port of br-phy (netdev, fail_mode
# standalone, never managed by Loom), its address moves to br-phy's internal
# port, so ovs-vswitchd's tunnel route table resolves the other chassis' encap IPs
# (ovs-appctl ovs/route/show). Checksum/segmentation offloads are turned off
# everywhere: with them on, TCP silently breaks on the userspace datapath.
#
# ARP: only the interface holding an address answers for it (arp_ignore=1) and ARP
# requests carry the outgoing interface's own address (arp_announce=2). With the
# kernel defaults the underlay NIC, now a port of br-phy, also answers for the encap
# IP with its own MAC; a peer whose OVS caches that MAC sends its tunnel packets
# where br-phy never takes them in, and the tunnel drops everything.
set -eu

ENCAP_IP=${LOOM_ENCAP_IP:?set LOOM_ENCAP_IP to this chassis underlay address}
NAME=${LOOM_CHASSIS_NAME:-$(hostname)}
REMOTE=${LOOM_OVSDB_REMOTE:-ptcp:6640}
DB=/var/lib/openvswitch/conf.db
RUN=/var/run/openvswitch
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema

log() { echo "hypervisor $NAME: $*"; }
offloads_off() { ethtool -K "$1" rx off tx off sg off tso off gso off gro off >/dev/null 2>&1 || true; }

arp_sysctls() {
    for scope in all default "$@"; do
        sysctl -q -w "net.ipv4.conf.$scope.arp_ignore=1" "net.ipv4.conf.$scope.arp_announce=2"
    done
}
arp_sysctls  # before any interface answers for the encap IP

mkdir -p "$RUN" /var/lib/openvswitch /var/log/openvswitch
if [ ! -f "$DB" ]; then
    ovsdb-tool create "$DB" "$SCHEMA"
elif [ "$(ovsdb-tool needs-conversion "$DB" "$SCHEMA")" = yes ]; then
    ovsdb-tool convert "$DB" "$SCHEMA"
fi
ovsdb-server "$DB" --remote="punix:$RUN/db.sock" --remote="$REMOTE" \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
    --pidfile --detach --log-file
ovs-vsctl --no-wait init
ovs-vsctl --no-wait set Open_vSwitch . "external_ids:system-id=$NAME" \
    "external_ids:hostname=$NAME" "external_ids:loom-encap-ip=$ENCAP_IP"
ovs-vswitchd --pidfile --detach --log-file --disable-system
log "ovsdb-server ($REMOTE) and ovs-vswitchd (userspace datapath) up"

# The underlay NIC: the interface holding the encap IP (or already in br-phy after a
# container restart, when the address sits on br-phy).
NIC=$(ip -o -4 addr show | awk -v ip="$ENCAP_IP" '{split($4, a, "/")} a[1] == ip {print $2; exit}')
CIDR=$(ip -o -4 addr show | awk -v ip="$ENCAP_IP" '{split($4, a, "/")} a[1] == ip {print $4; exit}')
[ -n "$NIC" ] || { log "no interface holds $ENCAP_IP"; exit 1; }
if [ "$NIC" != br-phy ]; then
    # br-phy keeps its own MAC: were it the NIC's, the NIC's kernel stack would also
    # take every frame for the encap IP (duplicate replies).
    ovs-vsctl --may-exist add-br br-phy -- set Bridge br-phy datapath_type=netdev \
        fail_mode=standalone
    ovs-vsctl --may-exist add-port br-phy "$NIC"
    ip addr del "$CIDR" dev "$NIC"
    ip addr add "$CIDR" dev br-phy
    offloads_off "$NIC"
fi
ip link set br-phy up
offloads_off br-phy
arp_sysctls "$NIC" br-phy
NET=$(ip -o -4 route show dev br-phy proto kernel | awk '{print $1; exit}')
if ! ovs-appctl ovs/route/show | grep -q "$NET dev br-phy"; then
    ovs-appctl ovs/route/add "$NET" br-phy
fi
for dev in $(ls /sys/class/net); do offloads_off "$dev"; done
log "encap $ENCAP_IP on br-phy (underlay NIC $NIC); tunnel route $NET dev br-phy"

# Tunnel neighbours: for each peer not yet in OVS's cache, ask the kernel (one ping
# through br-phy; with the sysctls above only the peer's br-phy answers the ARP) and
# hand OVS that MAC. Retried from the wait loop below until every peer is known;
# entries age out after 15 min unused, like snooped ones, and are put back then.
prime_neighbours() {
    for peer in ${LOOM_PEER_ENCAP_IPS:-}; do
        [ "$peer" = "$ENCAP_IP" ] && continue
        ovs-appctl tnl/neigh/show | awk -v ip="$peer" '$1 == ip && NF == 3 {f = 1} END {exit !f}' \
            && continue
        ping -n -q -c 1 -W 1 "$peer" >/dev/null 2>&1 || continue
        mac=$(ip neigh show "$peer" dev br-phy \
              | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") {print $(i + 1); exit}}')
        [ -n "$mac" ] || continue
        ovs-appctl tnl/neigh/set br-phy "$peer" "$mac" >/dev/null \
            && log "tunnel neighbour $peer is-at $mac (tnl/neigh/set)"
    done
}
prime_neighbours || true

stop() {
    log "stopping"
    ovs-appctl -t ovs-vswitchd exit --cleanup || true
    ovs-appctl -t ovsdb-server exit || true
    exit 0
}
trap stop TERM INT
# PID 1 waits while both daemons live; a dead daemon ends the container (restart policy).
while kill -0 "$(cat "$RUN/ovs-vswitchd.pid")" 2>/dev/null \
        && kill -0 "$(cat "$RUN/ovsdb-server.pid")" 2>/dev/null; do
    sleep 2 &
    wait $! || true
    prime_neighbours || true
done
log "a daemon exited; see /var/log/openvswitch"
exit 1

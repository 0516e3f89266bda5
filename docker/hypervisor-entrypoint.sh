#!/bin/sh
# Start one Loom hypervisor inside a container; stays in the foreground until stopped.
#
#   LOOM_ENCAP_IP      (required) this chassis' underlay address, already on one of the
#                      container's interfaces (docker-compose: ipv4_address on "underlay")
#   LOOM_CHASSIS_NAME  external_ids:system-id (default: the hostname)
#   LOOM_OVSDB_REMOTE  where OVSDB listens for the controller (default: ptcp:6640)
#
# The interface holding LOOM_ENCAP_IP becomes a port of br-phy (netdev, fail_mode
# standalone, never managed by Loom), its address moves to br-phy's internal
# port, so ovs-vswitchd's tunnel route table resolves the other chassis' encap IPs
# (ovs-appctl ovs/route/show). Checksum/segmentation offloads are turned off
# everywhere: with them on, TCP silently breaks on the userspace datapath.
set -eu

ENCAP_IP=${LOOM_ENCAP_IP:?set LOOM_ENCAP_IP to this chassis underlay address}
NAME=${LOOM_CHASSIS_NAME:-$(hostname)}
REMOTE=${LOOM_OVSDB_REMOTE:-ptcp:6640}
DB=/var/lib/openvswitch/conf.db
RUN=/var/run/openvswitch
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema

log() { echo "hypervisor $NAME: $*"; }
offloads_off() { ethtool -K "$1" rx off tx off sg off tso off gso off gro off >/dev/null 2>&1 || true; }

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
NET=$(ip -o -4 route show dev br-phy proto kernel | awk '{print $1; exit}')
if ! ovs-appctl ovs/route/show | grep -q "$NET dev br-phy"; then
    ovs-appctl ovs/route/add "$NET" br-phy
fi
for dev in $(ls /sys/class/net); do offloads_off "$dev"; done
log "encap $ENCAP_IP on br-phy (underlay NIC $NIC); tunnel route $NET dev br-phy"

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
done
log "a daemon exited; see /var/log/openvswitch"
exit 1

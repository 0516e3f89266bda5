"""A simulator of Loom's own OpenFlow pipeline: packets through compiled tables, offline.

The compiler is pure, so what a switch will hold is known before anything is pushed.
This package runs packets through those desired states (`DesiredSwitch`), the way
ovs-vswitchd would, for the subset of OpenFlow 1.3 and Nicira extensions Loom emits:
priority lookup with masks and conjunctive matches, apply-actions then
write-metadata then goto, resubmit, groups, conntrack (per switch: new, established,
reply, committed marks, source and destination NAT) and copies crossing tunnels,
provider networks and fabric links to the next switch. No switch is touched.

It answers two questions: what a planned change does to who can reach whom
(`reachability`, issue 15's reachability diff, after Batfish's differential
reachability), and, in the tests, whether the compiler's output means what Neutron's
API says (isolation, port security, security groups), checked against a plain-Python
model of Neutron's rules.
"""

"""Topologies and lab helpers: namespaces, private OVS instances, guests, Mininet nets."""

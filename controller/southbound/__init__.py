"""Southbound: OpenFlow channels to switches and OVSDB sessions to chassis."""

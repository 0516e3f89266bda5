"""Loom: an SDN controller for multi-tenant Open vSwitch networks."""

"""os-ken applications: thin adapters from OpenFlow events to calls on the core."""

"""The Mininet testbed (``lego.topo``): topologies, network, switch classes, the Ray
cluster, traffic, and ``lego run``."""

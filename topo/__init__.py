"""The Mininet testbed (``lego.topo``): topologies, network, switch classes, the
system in Mininet (switch, Ray cluster, controller or agents) and its status, the
Ray cluster (one node per NF host, or a local one), traffic (generated traces and
batches, the pacer, replays), and the same system on one machine without Mininet
(:mod:`~lego.topo.local_system`: the target's pipeline model feeds the bricks)."""

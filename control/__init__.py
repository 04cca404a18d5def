"""The controller (``lego.control``): Algorithm 1, the pure core and its I/O edge,
the switch over P4Runtime, the bricks on Ray, the scaling policies."""

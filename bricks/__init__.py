"""The brick runtime (``lego.bricks``): bricks, their graphs and transport, a brick
as a process or a Ray actor; the Kitsune NF in ``lego.bricks.kitsune``."""

"""The Kitsune NF (``lego.bricks.kitsune``): its bricks, its graph, the brick side
of state moves, and the monolith the bricks are held against."""

"""The brick runtime (``lego.bricks``): bricks, their graphs and transport, a brick
as a process or a Ray actor. It knows brick roles, never an NF: each NF's bricks
are in its own package (:mod:`lego.nfs`)."""

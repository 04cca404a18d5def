"""The P4 program (``lego.p4src``): ``lego.p4``, p4c's outputs, the P4Info reader."""

"""The software P4Runtime target (``lego.switch``): ``lego.p4``'s executable model,
its AF_PACKET ports and its P4Runtime server; ``lego switch`` runs it."""

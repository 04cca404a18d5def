"""LEGO: scaling ANN-based network functions correctly and efficiently.

One import namespace over the architecture's folders: ``lego.ext`` (Cython kernels,
``ext/``), ``lego.bricks`` (``bricks/``), ``lego.control`` (``control/``),
``lego.topo`` (``topo/``), ``lego.p4src`` (``p4src/``).
"""

__version__ = "0.1.0"

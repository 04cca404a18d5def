"""LEGO: scaling ANN-based network functions correctly and efficiently.

One import namespace over the architecture's folders: ``lego.ext`` (Cython kernels,
``ext/``), ``lego.switch`` (the software target, ``switch/``), ``lego.control``
(``control/``), ``lego.bricks`` (``bricks/``), ``lego.topo`` (the Mininet testbed,
``topo/``), ``lego.experiments`` (``experiments/``), ``lego.p4src`` (``p4src/``),
``lego.nfs`` (the NF boundary and one package per NF, ``nfs/``).
"""

__version__ = "0.1.0"

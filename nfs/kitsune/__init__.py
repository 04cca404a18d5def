"""The Kitsune NF (``lego.nfs.kitsune``): AfterImage's damped statistics and the
KitNET autoencoder ensemble, cut into the bricks of the paper's Table I.

``NF`` (:mod:`lego.nfs.kitsune.nf`) is all the framework sees of it. The rest:
its brick logics (:mod:`~lego.nfs.kitsune.detector`), the monolith they are held
against (:mod:`~lego.nfs.kitsune.monolith`), graph helpers for tests and Figure 4
(:mod:`~lego.nfs.kitsune.graph`) and ``lego kitsune`` (:mod:`~lego.nfs.kitsune.cli`).
The kernels are in ``lego.ext`` (afterimage, legostats, kitnet).
"""

from lego.nfs.kitsune.nf import NF

__all__ = ["NF"]

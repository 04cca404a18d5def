"""LUCID (Doriguzzi-Corin et al., IEEE TNSM 2020): a supervised CNN over bidirectional-flow
time windows, through the NF boundary (:mod:`lego.nfs.lucid.nf`)."""

from lego.nfs.lucid.nf import NF

__all__ = ["NF"]

"""The monolithic Kitsune NF: feature extraction -> KitNET -> decision, one process.

This is the single-instance reference that every split or brick graph must
reproduce, and the baseline of Figure 4. It streams PacketBatch batches: the
feature extractor keeps its state across batches and KitNET moves through its
phases (feature mapping, autoencoder training, execution) row by row, exactly as
Kitsune processes one packet at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from lego.errors import ModelError
from lego.ext.batch import PacketBatch
from lego.ext.features import make_extractor
from lego.ext.kitnet import KitNET

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Scores of a batch's primary packets: ``seq`` (packet indices) and ``score``
    (0.0 while KitNET is still training, as in Kitsune), ``trained`` marks rows
    scored by a trained model."""

    seq: np.ndarray
    score: np.ndarray
    trained: np.ndarray


@dataclass
class KitsuneNF:
    semantics: str
    kitnet: KitNET
    extractor: object = field(init=False)
    # features of the autoencoder-training rows, kept to fit the threshold
    keep_training_rows: bool = True
    _ad_rows: list[np.ndarray] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.extractor = make_extractor(self.semantics)
        if self.kitnet.n_features != self.extractor.n_features:
            raise ModelError(
                f"model: expected {self.extractor.n_features} features for semantics "
                f"{self.semantics!r}, the model has {self.kitnet.n_features}"
            )

    @classmethod
    def fresh(cls, semantics: str, fm: int, ad: int, max_ae: int = 10, lr: float = 0.1,
              hidden_ratio: float = 0.75) -> KitsuneNF:
        n = make_extractor(semantics).n_features
        return cls(semantics, KitNET(n, max_ae=max_ae, fm_grace=fm, ad_grace=ad, lr=lr,
                                     hidden_ratio=hidden_ratio))

    @property
    def trained(self) -> bool:
        return self.kitnet.phase == "exec"

    def process(self, batch: PacketBatch) -> Scored:
        features = self.extractor.process(batch)
        seq = batch.seq[batch.mirror == 0]
        was_exec = self.trained
        if was_exec:
            score = self.kitnet.execute(features)
            trained = np.ones(len(score), dtype=bool)
        else:
            before = self.kitnet.n_trained
            score = self.kitnet.process(features)
            trained = self._trained_mask(before, len(score))
            if self.keep_training_rows:
                self._keep_ad_rows(features, before)
        return Scored(seq, score, trained)

    def _trained_mask(self, before: int, n: int) -> np.ndarray:
        """Rows scored by an already trained model: those past the grace periods."""
        first_exec = self.kitnet.fm_grace + self.kitnet.ad_grace + 1 - before
        mask = np.zeros(n, dtype=bool)
        mask[max(first_exec, 0):] = True
        return mask

    def _keep_ad_rows(self, features: np.ndarray, before: int) -> None:
        fm, ad = self.kitnet.fm_grace, self.kitnet.ad_grace
        rows = np.arange(before, before + len(features))
        keep = (rows > fm) & (rows <= fm + ad)
        if keep.any():
            self._ad_rows.append(features[keep])

    def fit_threshold(self, method: str = "lognormal", p_value: float = 1e-4) -> float:
        """Fit the alert threshold on the trained model's scores of its own
        autoencoder-training rows (benign by assumption)."""
        if not self.trained:
            raise ModelError("threshold: the model is not trained yet (too few packets?)")
        if not self._ad_rows:
            raise ModelError("threshold: no training rows were kept to fit it on")
        benign = self.kitnet.execute(np.concatenate(self._ad_rows))
        self._ad_rows.clear()
        return self.kitnet.fit_threshold(benign, method=method, p_value=p_value)

    def run(self, batches: Iterable[PacketBatch]) -> Iterator[Scored]:
        for batch in batches:
            yield self.process(batch)

"""The paper's experiments (``lego.experiments``): Table II (one instance vs K
replicas, both feature semantics) and Figure 4 (monolith vs brick graph)."""

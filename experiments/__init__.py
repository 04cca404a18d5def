"""The paper's experiments (``lego.experiments``): Table II (one instance vs K
replicas, both feature semantics), Figure 4 (monolith vs brick graph), and the
elasticity run of ``make run`` (:mod:`lego.experiments.elastic`)."""

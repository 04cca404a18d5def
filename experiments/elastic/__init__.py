"""The elasticity experiment, ``make run`` (``lego.experiments.elastic``): the whole
system in the Mininet testbed (:mod:`lego.topo`) under a rising load.

- :mod:`~lego.experiments.elastic.run`: the run (calibration, replay, dashboard, drain);
- :mod:`~lego.experiments.elastic.calibrate`: one replica's capacity, measured first;
- :mod:`~lego.experiments.elastic.record`: what the switch sent each NF host, and the
  offline reference scored over it;
- :mod:`~lego.experiments.elastic.results`: what the run writes to ``results/``;
- :mod:`~lego.experiments.elastic.report`: its figures and sentences (pure);
- :mod:`~lego.experiments.elastic.dashboard`: the live terminal dashboard.
"""

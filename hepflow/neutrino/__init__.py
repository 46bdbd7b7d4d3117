"""The semileptonic ttbar neutrino analysis: p(nu px, py, eta | MET, lepton, jets).

Its modules, in the order they import each other:

* :mod:`~hepflow.neutrino.features`: the column names and the model context built from them;
* :mod:`~hepflow.neutrino.quadratic`: the W-mass-constraint baseline (and ``M_W``);
* :mod:`~hepflow.neutrino.selection`: the event selection (``[selection]``);
* :mod:`~hepflow.neutrino.config`: the whole analysis config;
* :mod:`~hepflow.neutrino.processor`: the coffea feature processor;
* :mod:`~hepflow.neutrino.model`: the cINN and the regression, and loading them back;
* :mod:`~hepflow.neutrino.data`: training data from processed features;
* :mod:`~hepflow.neutrino.inference`: per-event posterior and baseline columns;
* :mod:`~hepflow.neutrino.inference_processor`: the coffea processor that writes them;
* :mod:`~hepflow.neutrino.report`: the comparison report;
* :mod:`~hepflow.neutrino.pipeline`: one function per ``hepflow ... neutrino`` command.
"""

"""The likelihood as an object (``base``): the probability-flow ODE (``ode``), its divergence
estimators (``divergence``) and its prior at T (``priors``); config group ``likelihood``."""

"""The likelihood through the probability-flow ODE (``ode``) and its prior at T (``priors``)."""

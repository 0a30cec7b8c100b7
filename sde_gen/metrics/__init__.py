"""Sample quality: against exact Gaussian mixtures (``mixtures``: MMD², NLL gap, end-point error,
Monte Carlo floors) and for images (``images``: Fréchet distance, KID, PNG export)."""

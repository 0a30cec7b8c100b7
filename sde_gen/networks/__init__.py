"""Where a network becomes a score function: an sde_gen checkpoint (``checkpoint``, its stored
config checked by ``guard``), a saved diffusers model (``diffusers_folder``, its scheduler config
read by ``diffusers_schedule``), or the exact score of a Gaussian mixture (``source``, what the
command lines load)."""

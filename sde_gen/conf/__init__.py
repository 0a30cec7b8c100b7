"""Hydra config groups of sde_gen (package data). Importing this package registers the typed
schemas (``train_schema``, ``sample_schema``, ``eval_schema``) and the help resolver that the
primary configs use, so ``initialize_config_module("sde_gen.conf")`` composes them too."""

from sde_gen.cli.errors import register_resolvers
from sde_gen.cli.settings import register_configs, register_fit_grid_config

register_configs()
register_resolvers()
register_fit_grid_config()

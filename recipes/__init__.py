"""Recipes shipped with latentbridge: one YAML file per experiment (see `latentbridge ls`)."""

"""Typed configs, recipes, overrides and the catalogue of shipped recipes."""

"""Recipes: what the command line runs (train, eval, generate, compare, demo), built from the library."""

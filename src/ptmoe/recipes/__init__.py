"""Recipes: the commands (train, eval, generate, compare, continual, demo, export, serve, config), each
argument parsing and then named steps that call the library; nothing in the library imports them."""

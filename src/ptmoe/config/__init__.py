"""Configuration: every key with its default and check (schema.py), reading YAML files and key=value
overrides (loading.py), the named presets of each method (presets.py), docs/config.md (reference.py),
and the main job's config (demo.yaml, package data)."""

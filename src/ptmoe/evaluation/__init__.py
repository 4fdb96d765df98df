"""Evaluation: answering and scoring evaluation sets (evaluate.py), the scores (metrics.py), what the
router did (routing.py: usage, mutual information) and what routing is worth (routing_value.py), and
per-question paired comparisons (paired.py)."""

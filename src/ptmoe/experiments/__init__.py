"""Experiments of many runs, shared by `ptmoe compare` and `ptmoe continual`: the plan of a comparison
(plan.py), the run store (store.py), the executors (sequential.py; ray_executor.py on a Ray cluster,
checked by ray_cluster.py), the tables (tables.py), and the continual sequence and its tables
(continual.py, continual_table.py)."""

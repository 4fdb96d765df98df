"""Training: the loop behind `ptmoe train` (loop.py) and what it is built from (setup.py), the training
data (data.py), the optimizer and schedule (optim.py), run folders and checkpoints (run_folder.py), and
starting from an adapter and growing it (grow_source.py, grow.py)."""

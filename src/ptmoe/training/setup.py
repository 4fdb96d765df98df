"""What a training run is built from: its folder, the adapted model, and Ctrl-C handled between steps."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from ..adapted import AdaptedModel
from ..base_models import load_base_model
from ..config.presets import resolve_method_options
from ..device import resolve_dtype

DATA_INIT_ROWS = 512  # training inputs an adapter that starts from the data (router_init: kmeans) sees


def output_dir(cfg: dict) -> Path:
    return Path(str(cfg["output_dir"]).format(method=cfg["method"], seed=cfg["seed"]))


def build_model(cfg: dict, device: torch.device):
    options = resolve_method_options(cfg)  # may read the data: its errors come before the model loads
    base, tok = load_base_model(cfg["model"], resolve_dtype(cfg["dtype"], device))
    model = AdaptedModel(base.to(device), cfg["method"], options, tok, seed=cfg["seed"])
    return model, tok


def interrupt_at_step_end():
    """-> (event, restore). Ctrl-C during training sets the event, which the loop reads once a step is
    done, so the interrupt never lands inside a save, a log write or TensorBoard's writer (a
    KeyboardInterrupt there can leave a lock held, and the exit then hangs); a second Ctrl-C interrupts
    at once. restore() puts the previous handler back."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # handlers live on the main thread
        return requested, lambda: None

    def on_sigint(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    return requested, lambda: signal.signal(signal.SIGINT, previous)

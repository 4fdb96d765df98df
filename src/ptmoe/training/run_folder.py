"""Run folders: what is in them, when a new run may write there, checkpoints (safetensors + JSON,
never pickle), and how a run that stops early says so.

A folder that holds a run is never written by a new one unless asked: `--resume` continues it,
`--overwrite` replaces it (after the new run's config, data and model have loaded, so a command
that fails on bad input leaves the old run untouched).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config.schema import ConfigError
from ..fsutil import atomic_dir, recover_dir

# what a training run writes into its folder (anything else there is left alone)
NON_FINITE = 3  # exit code of a run stopped by a NaN / inf loss
RUN_ENTRIES = ("config.yaml", "log.jsonl", "train_summary.json", "checkpoint", "best", "final", "tensorboard")


class RunStopped(Exception):
    """Training ended early (non-finite loss, Ctrl-C): one line for the user, a non-zero exit code.
    `resumable`: the last checkpoint can be continued with --resume."""

    def __init__(self, message: str, exit_code: int = 1, resumable: bool = False):
        super().__init__(message)
        self.exit_code, self.resumable = exit_code, resumable


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_ENTRIES)


def check_run_folder(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is loaded, to start a new run where one already is."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite: choose one")
    if resume or overwrite or not holds_run(folder):
        return
    raise ConfigError(
        f"output_dir {folder} already holds a run: add --resume to continue it, --overwrite to "
        f"replace it, or choose another output_dir="
    )


def clear_run(folder: Path) -> None:
    """--overwrite: remove the earlier run's files (only those a run writes)."""
    for name in RUN_ENTRIES:
        for path in (folder / name, folder / f"{name}.old", folder / f"{name}.tmp-save"):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def fresh_folder(folder: Path) -> Path:
    """folder, or folder-2, folder-3, ... : the first one that holds no run."""
    n, candidate = 1, folder
    while holds_run(candidate):
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")
    return candidate


def checkpoint_note(folder: Path) -> str:
    """Where the last checkpoint and the best adapter are, for a message."""
    state = folder / "checkpoint" / "trainer_state.json"
    parts = []
    if state.exists():
        parts.append(f"last checkpoint {folder / 'checkpoint'} (step {json.loads(state.read_text())['step']})")
    else:
        parts.append("no checkpoint was saved yet")
    best = folder / "best" / "adapter_config.json"
    if best.exists():
        meta = json.loads(best.read_text())
        parts.append(f"best adapter {folder / 'best'} (step {meta.get('step', '?')})")
    return "; ".join(parts)


def non_finite(model) -> list[str]:
    """Names of the trainable tensors (and routing statistics) that hold NaN or inf."""
    # cli.py imports this module (RunStopped): `ptmoe --help` starts without torch
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    named += [(n, b) for n, b in model.named_buffers() if "prompt" in n or "router" in n]
    return [n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


# ---- checkpoints: safetensors + JSON, never pickle -----------------------------------------------
def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    # cli.py imports this module (RunStopped): `ptmoe --help` starts without torch
    import torch
    from safetensors.torch import save_file

    tensors, groups = {}, []
    for gi, group in enumerate(optimizer.param_groups):
        groups.append({k: v for k, v in group.items() if k != "params"})
        for pi, p in enumerate(group["params"]):
            for k, v in optimizer.state.get(p, {}).items():
                tensors[f"{gi}.{pi}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp / "adapter")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "param_groups": groups}, indent=2))


def load_checkpoint(path: Path, model, optimizer) -> dict:
    # cli.py imports this module (RunStopped): `ptmoe --help` starts without torch
    import torch
    from safetensors.torch import load_file

    recover_dir(path)
    state = json.loads((path / "trainer_state.json").read_text())
    model.load_weights(path / "adapter", model.active_adapter)
    tensors = load_file(str(path / "optimizer.safetensors"))
    for gi, group in enumerate(optimizer.param_groups):
        group.update(state["param_groups"][gi])
        for pi, p in enumerate(group["params"]):
            st = {k.split(".", 2)[2]: v.to(p.device) for k, v in tensors.items() if k.startswith(f"{gi}.{pi}.")}
            if st:
                optimizer.state[p] = st
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state

"""Batches: padding, and length-grouped batch order (little padding, still shuffled)."""

from __future__ import annotations

import random

import torch


def pad_batch(rows: list[dict], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """rows: {input_ids: list[int], labels?: list[int]} -> input_ids, attention_mask (, labels), padded."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long) if "labels" in rows[0] else None
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(r["input_ids"])
        mask[i, sl] = 1
        if labels is not None:
            labels[i, sl] = torch.tensor(r["labels"])
    out = {"input_ids": ids, "attention_mask": mask}
    if labels is not None:
        out["labels"] = labels
    return out


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, group: int = 32) -> list[list[int]]:
    """One epoch of batches: shuffle, sort within windows of `group` batches by length, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches  # full batches keep the step size fixed
    rng.shuffle(batches)
    return batches


def epoch_batches(lengths: list[int], batch_size: int, seed: int, grouped: bool = True):
    """Endless batches over epochs, deterministic from the seed (resuming replays the same order)."""
    epoch = 0
    while True:
        if grouped:
            yield from length_grouped_batches(lengths, batch_size, seed + epoch)
        else:
            order = list(range(len(lengths)))
            random.Random(seed + epoch).shuffle(order)
            yield from (order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size))
        epoch += 1

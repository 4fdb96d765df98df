"""README.md written into every saved adapter, as PEFT writes one: base model, method and options,
trainable parameters, training data and budget, and results where they are known.

Training facts come from `extra["training"]` when the caller gives them, else from the run folder's
config.yaml (`ptmoe train` writes RUN/config.yaml and saves adapters as RUN/best, RUN/final);
results from `extra["results"]`, else from RUN/eval/results.json when `ptmoe eval` has written one.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

CARD_NAME = "README.md"
# the packaged base models' Hugging Face ids (the card's `base_model`; PEFT configs record them too)
HF_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct", "gemma3-270m": "google/gemma-3-270m"}


def _run_training(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None

    try:
        cfg = yaml.safe_load(path.read_text())
        data, train = cfg.get("data", {}), cfg.get("train", {})
        return {
            "data": data.get("train"),
            "max_train_examples": data.get("max_train_examples"),
            "max_length": data.get("max_length"),
            "steps": train.get("steps"),
            "batch_size": train.get("batch_size"),
            "grad_accum": train.get("grad_accum"),
            "lr": train.get("lr"),
            "seed": cfg.get("seed"),
        }
    except (yaml.YAMLError, AttributeError):
        return None


def _run_results(run_dir: Path) -> dict | None:
    path = run_dir / "eval" / "results.json"
    try:
        return _scores(json.loads(path.read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def _scores(r: dict) -> dict:
    """What the card shows of `ptmoe eval`'s results: each set's n and scores, and the average."""
    return {
        "sets": {
            k: {m: v for m, v in s.items() if m in ("n", "f1", "em", "accuracy")} for k, s in r.get("sets", {}).items()
        },
        "average": r.get("average"),
    }


def add_results(folder, results: dict) -> bool:
    """A later `ptmoe eval`'s scores into the card of the ptmoe adapter in `folder` (a PEFT folder or a
    Trainer's model.safetensors has no card of ptmoe's to update: False)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or "method" not in meta or not (folder / CARD_NAME).is_file():
        return False
    card = card_text({**meta, "results": _scores(results)}, folder.resolve().parent)
    tmp = folder / f".{CARD_NAME}.tmp"
    tmp.write_text(card)
    tmp.replace(folder / CARD_NAME)
    return True


def card_text(meta: dict, run_dir: Path | None = None, peft_type: str | None = None) -> str:
    base = meta.get("base_model", {})
    training = meta.get("training") or (run_dir and _run_training(run_dir))
    results = meta.get("results") or (run_dir and _run_results(run_dir))
    name = base.get("name") or "unknown"
    lib = "peft" if peft_type else "ptmoe"
    lines = [
        "---",
        f"library_name: {lib}",
        f"base_model: {HF_IDS.get(name, name)}",
        f"tags: [{', '.join(dict.fromkeys(['ptmoe', meta['method']]))}]",
        "---",
        "",
        f"# {meta['method']} adapter for {name}",
        "",
        (
            f"- Base model: `{name}` (hidden size {base.get('hidden_size')}, vocabulary {base.get('vocab_size')}, "
            f"embedding fingerprint `{base.get('embedding_fingerprint')}`)"
        ),
        f"- Method: `{meta['method']}` with options `{json.dumps(meta.get('config', {}), sort_keys=True)}`",
        f"- Trainable parameters: {meta.get('num_trainable', 0):,}",
    ]
    if peft_type:
        lines.append(
            f"- Format: PEFT `{peft_type}`, exported by `ptmoe export --format peft` from "
            f"`{meta.get('exported_from', '?')}`"
        )
    if training:
        t = ", ".join(f"{k} {v}" for k, v in training.items() if v is not None)
        lines.append(f"- Training: {t}")
    for key in ("step", "valid_loss"):
        if key in meta:
            lines.append(f"- Saved at {key.replace('_', ' ')}: {meta[key]}")
    if meta.get("lineage"):
        lines += [
            "",
            "## Lineage (`ptmoe train --from`)",
            "",
            "| stage | started from | data | experts added | frozen |",
        ]
        lines.append("|---|---|---|---|---|")
        for i, s in enumerate(meta["lineage"], 1):
            data = ", ".join(s.get("data") or [])
            frozen = ", ".join(s.get("frozen") or [])
            lines.append(f"| {i} | {s.get('from') or 'scratch'} | {data} | {s.get('experts_added', '')} | {frozen} |")
    if results:
        lines += ["", "## Results (`ptmoe eval`)", "", "| set | n | F1 | EM | accuracy |", "|---|---|---|---|---|"]
        cell = lambda r, k: f"{r[k]:.2f}" if isinstance(r.get(k), (int, float)) else ""
        for s, r in (results.get("sets") or {}).items():
            lines.append(f"| {s} | {r.get('n', '')} | {cell(r, 'f1')} | {cell(r, 'em')} | {cell(r, 'accuracy')} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from ptmoe import AdaptedModel, load_base_model",
        "",
        f'base, tok = load_base_model("{name}")',
        'model = AdaptedModel.from_pretrained("THIS_FOLDER", base, tok)',
        "```",
    ]
    if peft_type:
        lines += [
            "",
            "or with PEFT:",
            "",
            "```python",
            "from peft import PeftModel",
            "",
            'model = PeftModel.from_pretrained(base, "THIS_FOLDER")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def write_model_card(folder, meta: dict, final_dir=None, peft_type: str | None = None) -> Path:
    """Write README.md into `folder` (a temp folder being saved). `final_dir`: where the adapter will
    live, whose parent is the run folder; default: meta's `exported_from` adapter's, else none."""
    source = final_dir or meta.get("exported_from")
    run_dir = Path(source).resolve().parent if source else None
    path = Path(folder) / CARD_NAME
    path.write_text(card_text(meta, run_dir, peft_type))
    return path

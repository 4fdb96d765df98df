"""Growing a routed adapter in a run started from it (`ptmoe train CONFIG --from ADAPTER`; the checks
and the config it trains: grow_source.py), and the router's replay store.

- `--from` alone: the run starts from the adapter's method options and weights (fine-tuning it).
- with `grow.experts: K` (ptmoe): the adapter gets K new experts A_i and K new router rows. The old
  experts, the shared B and the old router rows (with the router's input statistics) can be frozen,
  exactly: their gradients are masked and, after every optimizer step, the frozen values are copied back
  (AdamW's weight decay moves a parameter even where its gradient is zero). New experts start as the
  mean of the old ones; new router rows start from the new data (`grow.router_init`). `grow.rank: K` also
  adds K rows to B (K columns to every A_i) for the new experts: the old experts' new columns are 0 and
  frozen with the rest of them, the old B rows frozen, so old prompts are unchanged.
- the replay store (`grow.store_size` > 0): per training stage, the pooled router inputs (masked mean
  input embeddings, H floats each, never text) of that many training examples, with the expert the
  router sent each to when the stage ended. It is saved beside the adapter as router_replay.safetensors
  and carried on by every adapter grown from it. While a grown adapter trains, stored inputs of earlier
  stages are replayed to the router only, as an extra loss (cross-entropy toward their experts), so a
  router trained on new data keeps sending old inputs to old experts.

The grown adapter is an ordinary adapter of its method (experts = old + new); its adapter_config.json
adds `lineage`, one entry per stage: the adapter it started from, the data, what was added and frozen.
This module runs the stages; the adapter grows itself through the hooks of a `growable` method
(`methods/growth.py`: `grow_from`, `init_new_router_rows`, `frozen_rows`, `route_logits`), so nothing
here names its tensors.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..methods.router_input import RouterInput
from ..persistence import CONFIG_NAME, WEIGHTS_NAME, AdapterError, read_adapter_config
from .grow_source import STORE_NAME, read_store


# ---- the run -------------------------------------------------------------------------------------
class Growth:
    """What a run started from an adapter (or keeping a replay store) adds to training: the source
    weights, the exact freeze, the router losses, the store and the lineage saved with the adapter."""

    def __init__(self, cfg: dict, meta: dict | None, model, train_rows: list[dict], pad_id: int, log=print):
        self.cfg, self.g, self.meta, self.model = cfg, cfg["grow"], meta, model
        self.adapter = model.adapter
        self.frozen: dict[str, tuple] = {}  # name -> (frozen rows, their values)
        self.frozen_labels: list[str] = []  # the frozen parts, as the lineage names them
        reads = getattr(self.adapter, "router_reads", None)
        self.kind = reads.kind if reads is not None else RouterInput().kind
        self.old = read_store(cfg["init_from"], self.kind) if cfg["init_from"] else None
        if self.old is not None:
            self.old = {k: v.to(self._device) if torch.is_tensor(v) else v for k, v in self.old.items()}
        rows = random.Random(cfg["seed"]).sample(train_rows, min(self.g["store_size"], len(train_rows)))
        self.new_inputs = model.pooled_inputs(rows, pad_id)
        if cfg["init_from"]:
            self._load_source(train_rows, pad_id, log)
        self.replay = torch.Generator().manual_seed(cfg["seed"])
        self.replaying = self.old is not None and self.g["replay_weight"] > 0 and bool(self.g["experts"])
        if self.replaying:
            log(f"[grow] replaying {len(self.old['experts'])} stored router inputs of {self.old['names']}")
        if self.replaying or (self.g["experts"] and self.g["route_weight"] > 0):
            self.adapter.register_forward_hook(self._router_loss)
        model.saved_with["lineage"] = (meta or {}).get("lineage", []) + [self._lineage_entry()]
        if self.g["store_size"]:
            model.sidecar_files[STORE_NAME] = self.store

    @property
    def _device(self):
        return next(self.adapter.parameters()).device

    # ---- the source adapter into the (grown) one -----------------------------------------------------
    def _load_source(self, train_rows, pad_id, log) -> None:
        path = Path(self.cfg["init_from"]) / WEIGHTS_NAME
        try:
            src = load_file(str(path))  # safetensors only: never a pickle
        except Exception as e:
            raise AdapterError(f"{path}: cannot read safetensors ({e})") from None
        if not self.g["experts"]:  # fine-tuning: the same shapes
            self.model.load_weights(self.cfg["init_from"])
            return
        n_old, r_old = self.n_old, self.r_old = self.adapter.grow_from(src, self.cfg["seed"])
        data = self.g["router_init"] == "data"  # else the new router rows start at zero
        new_inputs = self.model.pooled_inputs(train_rows[:256], pad_id) if data else None
        self.adapter.init_new_router_rows(n_old, new_inputs, self.old["inputs"] if self.old is not None else None)
        self._freeze(n_old, r_old)
        log(
            f"[grow] {self.cfg['init_from']}: {n_old} experts + {self.g['experts']} new"
            + (f", B rows {r_old} + {self.g['rank']} new" if self.g["rank"] else "")
            + "; frozen: "
            + (", ".join(self.frozen_labels) or "nothing")
        )

    def _freeze(self, n_old: int, r_old: int) -> None:
        """Record the frozen values (the adapter says which: `frozen_rows`) and mask their gradients;
        restore() copies them back after each step."""
        g = self.g
        parts = self.adapter.frozen_rows(n_old, r_old, g["freeze_experts"], g["freeze_shared"], g["freeze_router"])
        params, buffers = dict(self.adapter.named_parameters()), dict(self.adapter.named_buffers())
        self.frozen_labels = [label for _, label in parts.values() if label is not None]
        for name, (rows, _) in parts.items():
            t = params.get(name, buffers.get(name))
            self.frozen[name] = (rows, t.detach()[rows].clone())
            if name in params:
                mask = torch.ones_like(t)
                mask[rows] = 0.0
                t.register_hook(lambda grad, m=mask: grad * m)

    @torch.no_grad()
    def restore(self, *_args) -> None:
        """Copy the frozen values back (an optimizer step post-hook)."""
        tensors = {**dict(self.adapter.named_parameters()), **dict(self.adapter.named_buffers())}
        for name, (rows, value) in self.frozen.items():
            tensors[name][rows] = value

    # ---- the router losses ------------------------------------------------------------------------
    def _router_loss(self, module, inputs, output):
        """A forward hook: in training, add to the call's loss terms (which the trainer adds to the loss)
        replay_weight x CE(router logits on stored old inputs, the experts they were routed to) and
        route_weight x -log(the router's probability of the new experts on this batch's inputs).
        Only the router gets their gradient. -> the call's record with them (None: unchanged)."""
        if not module.training:
            return None
        loss = 0.0
        if self.replaying:
            loss = loss + self._replay_term(module, self.replay)
        if self.g["route_weight"] > 0:  # what the router read in this forward: the batch's pooled inputs
            loss = loss + self._route_term(module, module.router_features(*inputs[:2]))
        if not torch.is_tensor(loss):
            return None
        return output.add_loss(loss)  # after this call's own terms (balance, z-loss, source supervision)

    def _replay_term(self, module, generator) -> torch.Tensor:
        """replay_weight x CE(the router's logits on a batch of stored old inputs, the experts they went to)."""
        n = len(self.old["experts"])
        idx = torch.randint(n, (min(self.g["replay_batch"], n),), generator=generator).to(self._device)
        logits = module.route_logits(self.old["inputs"][idx]) / module.route_temperature
        return self.g["replay_weight"] * F.cross_entropy(logits.float(), self.old["experts"][idx])

    def _route_term(self, module, pooled: torch.Tensor) -> torch.Tensor:
        """route_weight x -log(the router's probability of the new experts), over pooled inputs [M, H]."""
        logits = (module.route_logits(pooled) / module.route_temperature).float()
        return self.g["route_weight"] * (logits.logsumexp(-1) - logits[:, self.n_old :].logsumexp(-1)).mean()

    # ---- the router alone, after the stage ------------------------------------------------------------
    @property
    def fits_router(self) -> bool:  # config checks: only a run that grows (from an adapter) sets it
        return self.g["router_fit_steps"] > 0

    def fit_router(self, model, best: Path) -> None:
        """Where grow.router_fit_steps asks, the router alone fit on the adapter about to be saved as final/
        and on the `best/` already saved (re-saved, marked `router_fit` so a resumed run never fits it
        twice); the model is left with final/'s weights, fitted."""
        if not self.fits_router:
            return
        meta = read_adapter_config(best) if (best / CONFIG_NAME).exists() else None
        if meta is not None and not meta.get("router_fit"):
            final = {k: v.detach().clone() for k, v in self.adapter.state_dict().items()}
            model.load_weights(best)
            self._fit_router()
            kept = {k: meta[k] for k in ("step", "valid_loss") if k in meta}
            model.save_pretrained(best, extra={**kept, "router_fit": True})
            self.adapter.load_state_dict(final)
        self._fit_router()

    def _fit_router(self) -> None:
        """grow.router_fit_steps steps of the two router losses alone, on the new router rows (the old ones
        stay frozen: their gradients are masked and restore() copies them back): stored old inputs toward
        their experts, and this stage's stored inputs (the store's new entries, pooled from training rows,
        never answers) toward the new experts. A stage's training steps can be too few for the router
        (docs/continual.md, benchmarks/growth_router.py): this gives it a budget of its own."""
        module = self.adapter
        opt = torch.optim.Adam(module.router_parameters(), lr=self.cfg["train"]["lr"])
        g = torch.Generator().manual_seed(self.cfg["seed"])
        batch, n_new = self.cfg["train"]["batch_size"], len(self.new_inputs)
        routing = self.g["route_weight"] > 0 and n_new > 0
        was_training = module.training
        module.eval()  # as at inference: noise-free, no running input statistics updated
        with torch.enable_grad():
            for _ in range(self.g["router_fit_steps"] if self.replaying or routing else 0):
                loss = self._replay_term(module, g) if self.replaying else 0.0
                if routing:
                    j = torch.randint(n_new, (min(batch, n_new),), generator=g).to(self._device)
                    loss = loss + self._route_term(module, self.new_inputs[j])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.restore()
        module.train(was_training)

    # ---- what is saved with the adapter ---------------------------------------------------------------
    @torch.no_grad()
    def store(self) -> tuple[dict, dict]:
        """The replay store: the old stages' entries as they were, then this stage's inputs with the expert
        the router sends each to now. -> (tensors, metadata)."""
        experts = self.adapter.route_logits(self.new_inputs).argmax(-1) if len(self.new_inputs) else None
        stage = self.stage_name()
        names = list(self.old["names"]) if self.old is not None else []
        tensors = {
            "inputs": self.new_inputs.float().cpu(),
            "experts": (experts if experts is not None else torch.zeros(0)).long().cpu(),
            "tasks": torch.full((len(self.new_inputs),), len(names), dtype=torch.long),
        }
        if self.old is not None:
            tensors = {k: torch.cat([self.old[k].cpu(), tensors[k]]) for k in tensors}
        return {k: v.contiguous() for k, v in tensors.items()}, {
            "tasks": json.dumps(names + [stage]),
            "router_input": self.kind,
        }

    def stage_name(self) -> str:
        return "+".join(self.cfg["data"]["train"])

    def _lineage_entry(self) -> dict:
        entry = {"from": self.cfg["init_from"], "data": list(self.cfg["data"]["train"])}
        if self.cfg["init_from"]:
            entry["experts_added"] = self.g["experts"]
            if self.g["rank"]:
                entry["b_rows_added"] = self.g["rank"]
        if self.g["experts"]:
            entry.update(
                frozen=self.frozen_labels,
                router_init=self.g["router_init"],
                replay_weight=self.g["replay_weight"] if self.replaying else 0.0,
                route_weight=self.g["route_weight"],
            )
            if self.fits_router:
                entry["router_fit_steps"] = self.g["router_fit_steps"]
        if self.g["store_size"]:
            H = self.new_inputs.shape[1]
            entry["store"] = {"entries_added": len(self.new_inputs), "bytes_per_entry": 4 * H + 16}
        return entry


def start(cfg: dict, meta: dict | None, model, train_rows, pad_id, log=print) -> Growth | None:
    """The Growth of a run that starts from an adapter or keeps a replay store, else None."""
    if not cfg["init_from"] and not cfg["grow"]["store_size"]:
        return None
    if meta is not None:
        model.check_base(meta, f"--from {cfg['init_from']}")
    return Growth(cfg, meta, model, train_rows, pad_id, log)

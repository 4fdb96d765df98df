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
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..methods.router_input import RouterInput
from ..persistence import WEIGHTS_NAME, AdapterError
from .grow_source import STORE_NAME, read_store


# ---- the run -------------------------------------------------------------------------------------
class Growth:
    """What a run started from an adapter (or keeping a replay store) adds to training: the source
    weights, the exact freeze, the router losses, the store and the lineage saved with the adapter."""

    def __init__(self, cfg: dict, meta: dict | None, model, train_rows: list[dict], pad_id: int, log=print):
        self.cfg, self.g, self.meta, self.model = cfg, cfg["grow"], meta, model
        self.adapter = model.adapter
        self.frozen: dict[str, tuple[slice, torch.Tensor]] = {}  # name -> (frozen rows, their values)
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
        state = self.adapter.state_dict()
        n_old, r_old = self.n_old, self.r_old = src["A"].shape[0], src["A"].shape[2]
        grown = {}
        for key, value in state.items():
            old = src[key].to(value.device, value.dtype)
            if old.shape == value.shape:
                grown[key] = old.clone()
            else:  # per-expert tensors and, with grow.rank, A's columns and B's rows: the old ones first
                grown[key] = value.clone()
                grown[key][tuple(slice(0, n) for n in old.shape)] = old
        A = grown["A"]
        A[:n_old, :, r_old:] = 0.0  # old experts never read the new B rows: their prompts stay as they were
        noise = torch.randn(A[n_old:, :, :r_old].shape, generator=torch.Generator().manual_seed(self.cfg["seed"]))
        # new experts: the old experts' mean on the old rows; on new rows (grow.rank) the fresh SVD init's values
        A[n_old:, :, :r_old] = src["A"].mean(0) + noise.to(A.device) * 0.01 * float(src["A"].std())
        self.adapter.load_adapter_state(grown)
        self._init_new_rows(n_old, train_rows, pad_id)
        self._freeze(n_old)
        log(
            f"[grow] {self.cfg['init_from']}: {n_old} experts + {self.g['experts']} new"
            + (f", B rows {r_old} + {self.g['rank']} new" if self.g["rank"] else "")
            + "; frozen: "
            + (", ".join(self._frozen_parts()) or "nothing")
        )

    @torch.no_grad()
    def _init_new_rows(self, n_old: int, train_rows, pad_id) -> None:
        """`data`: each new row w = 2 d / (|d|^2 + s^2), d = mean new input - mean old input (the replay
        store's, else 0), s^2 the new inputs' total variance: the logit gap between the two means is about 2
        where the tasks' inputs are far apart, and w shrinks to 0 where they cannot be told apart (no
        direction to trust). Its bias puts the new logit 1 above the best old one at the new mean.
        `zeros`: w = 0, b = 0."""
        router = self.adapter.router
        W, b = router.linear.weight, router.linear.bias
        W[n_old:] = 0.0
        if b is not None:
            b[n_old:] = 0.0
        if self.g["router_init"] != "data":
            return
        pooled = router.router_input(self.model.pooled_inputs(train_rows[:256], pad_id))
        new, spread = pooled.mean(0), pooled.var(0, unbiased=False).sum()
        if self.old is not None:
            ref = router.router_input(self.old["inputs"]).mean(0)
        else:  # no store: standardised inputs have mean 0; raw ones get 0 as well
            ref = torch.zeros_like(new)
        d = new - ref
        W[n_old:] = (2 * d / (d.pow(2).sum() + spread).clamp_min(1e-12)).to(W.dtype)
        if b is not None:
            best_old = router.clean_logits(new[None].clone())[0, :n_old].max()
            b[n_old:] = best_old + 1.0 - W[n_old:] @ new.to(W.dtype)

    def _freeze(self, n_old: int) -> None:
        """Record the frozen values and mask their gradients; restore() copies them back after each step."""
        parts = {
            "A": self.g["freeze_experts"],
            "B": self.g["freeze_shared"],
            "router.linear.weight": self.g["freeze_router"],
            "router.linear.bias": self.g["freeze_router"],
        }
        named = dict(self.adapter.named_parameters())
        for name, frozen in parts.items():
            p = named.get(name)
            if not frozen or p is None:
                continue
            rows = slice(0, self.r_old) if name == "B" else slice(0, n_old)
            self.frozen[name] = (rows, p.detach()[rows].clone())
            mask = torch.ones_like(p)
            mask[rows] = 0.0
            p.register_hook(lambda grad, m=mask: grad * m)
        if self.g["freeze_router"]:  # the router's running input statistics (input_norm: standardize)
            for name, buf in self.adapter.named_buffers():
                if name.startswith("router.input_"):
                    self.frozen[name] = (slice(None), buf.detach().clone())

    def _frozen_parts(self) -> list[str]:
        return [
            n
            for n, on in (
                ("old experts", "A"),
                ("old B rows" if self.g["rank"] else "B", "B"),
                ("old router rows", "router.linear.weight"),
            )
            if on in self.frozen
        ]

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
        loss, T = 0.0, module.router.temperature
        if self.replaying:
            n = len(self.old["experts"])
            idx = torch.randint(n, (min(self.g["replay_batch"], n),), generator=self.replay).to(self._device)
            logits = module.router.clean_logits(self.old["inputs"][idx]) / T
            loss = loss + self.g["replay_weight"] * F.cross_entropy(logits.float(), self.old["experts"][idx])
        if self.g["route_weight"] > 0:  # what the router read in this forward: the batch's pooled inputs
            logits = (module.router.clean_logits(module.router_features(*inputs[:2])) / T).float()
            new = logits.logsumexp(-1) - logits[:, self.n_old :].logsumexp(-1)
            loss = loss + self.g["route_weight"] * new.mean()
        if not torch.is_tensor(loss):
            return None
        return output.add_loss(loss)  # after this call's own terms (balance, z-loss, source supervision)

    # ---- what is saved with the adapter ---------------------------------------------------------------
    @torch.no_grad()
    def store(self) -> tuple[dict, dict]:
        """The replay store: the old stages' entries as they were, then this stage's inputs with the expert
        the router sends each to now. -> (tensors, metadata)."""
        router = self.adapter.router
        experts = router.clean_logits(self.new_inputs).argmax(-1) if len(self.new_inputs) else None
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
                frozen=self._frozen_parts(),
                router_init=self.g["router_init"],
                replay_weight=self.g["replay_weight"] if self.replaying else 0.0,
                route_weight=self.g["route_weight"],
            )
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

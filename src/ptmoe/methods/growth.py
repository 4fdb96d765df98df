"""The growth hooks of a routed adapter whose experts are rows (`growable`): what `training/grow.py` calls to
grow it without knowing its tensors. PT-MoE's experts are the rows of A [N, T, R] (over a shared B [R, H])
and of its router's linear layer; a new expert is a new row of each, and `grow.rank` adds rows to B (and
columns to every A_i) for the new experts only."""

from __future__ import annotations

import torch


class GrowableExperts:
    """Mixed into a prompt module with `A`, `B` and a `router` (methods/router.py)."""

    growable = True

    # ---- a grown adapter from a smaller one ---------------------------------------------------------------
    @torch.no_grad()
    def grow_from(self, src: dict[str, torch.Tensor], seed: int) -> tuple[int, int]:
        """Take a saved adapter with fewer experts (and, with grow.rank, fewer B rows): the old tensors first,
        the old experts' new columns 0 (they never read the new B rows: their prompts stay as they were),
        each new expert the old experts' mean plus a little noise on the old rows (on new rows the fresh SVD
        init's values). -> (old experts, old rank)."""
        n_old, r_old = src["A"].shape[0], src["A"].shape[2]
        grown = {}
        for key, value in self.state_dict().items():
            old = src[key].to(value.device, value.dtype)
            if old.shape == value.shape:
                grown[key] = old.clone()
            else:  # per-expert tensors and, with grow.rank, A's columns and B's rows: the old ones first
                grown[key] = value.clone()
                grown[key][tuple(slice(0, n) for n in old.shape)] = old
        A = grown["A"]
        A[:n_old, :, r_old:] = 0.0
        noise = torch.randn(A[n_old:, :, :r_old].shape, generator=torch.Generator().manual_seed(seed))
        A[n_old:, :, :r_old] = src["A"].mean(0) + noise.to(A.device) * 0.01 * float(src["A"].std())
        self.load_adapter_state(grown)
        return n_old, r_old

    @torch.no_grad()
    def init_new_router_rows(self, n_old: int, new_inputs: torch.Tensor | None, old_inputs=None) -> None:
        """The new experts' router rows. Without `new_inputs` (grow.router_init zeros): w = 0, b = 0. With the
        new data's pooled router inputs (`data`): each new row w = 2 d / (|d|^2 + s^2), d = mean new input -
        mean old input (`old_inputs`, the replay store's; else 0), s^2 the new inputs' total variance: the logit
        gap between the two means is about 2 where the tasks' inputs are far apart, and w shrinks to 0 where
        they cannot be told apart (no direction to trust). Its bias puts the new logit 1 above the best old one
        at the new mean."""
        router = self.router
        W, b = router.linear.weight, router.linear.bias
        W[n_old:] = 0.0
        if b is not None:
            b[n_old:] = 0.0
        if new_inputs is None:
            return
        pooled = router.router_input(new_inputs)
        new, spread = pooled.mean(0), pooled.var(0, unbiased=False).sum()
        if old_inputs is not None:
            ref = router.router_input(old_inputs).mean(0)
        else:  # no store: standardised inputs have mean 0; raw ones get 0 as well
            ref = torch.zeros_like(new)
        d = new - ref
        W[n_old:] = (2 * d / (d.pow(2).sum() + spread).clamp_min(1e-12)).to(W.dtype)
        if b is not None:
            best_old = router.clean_logits(new[None].clone())[0, :n_old].max()
            b[n_old:] = best_old + 1.0 - W[n_old:] @ new.to(W.dtype)

    def frozen_rows(self, n_old: int, r_old: int, experts: bool, shared: bool, router: bool) -> dict:
        """What growth freezes: {parameter or buffer name: (the rows frozen, the part's name in the lineage, or
        None for a buffer)}: the old experts' A_i, the old B rows (all of B without grow.rank), the old router
        rows and the router's running input statistics."""
        grew_rank = r_old < self.B.shape[0]
        parts = {
            "A": (experts, slice(0, n_old), "old experts"),
            "B": (shared, slice(0, r_old), "old B rows" if grew_rank else "B"),
            "router.linear.weight": (router, slice(0, n_old), "old router rows"),
            "router.linear.bias": (router, slice(0, n_old), None),
        }
        params = dict(self.named_parameters())
        out = {name: (rows, label) for name, (on, rows, label) in parts.items() if on and name in params}
        if router:  # the running input statistics (input_norm: standardize)
            out.update(
                {n: (..., None) for n, _ in self.named_buffers() if n.startswith("router.input_")}
            )  # all of each
        return out

    # ---- what growth's router losses and the replay store read ---------------------------------------------
    def route_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """The router's noise-free logits on pooled router inputs [M, H] (what it decides at inference)."""
        return self.router.clean_logits(pooled)

    def router_parameters(self) -> list[torch.nn.Parameter]:
        """What a router-only fit after a grown stage trains (grow.router_fit_steps)."""
        return list(self.router.parameters())

    @property
    def route_temperature(self) -> float:
        return self.router.temperature

"""PT-MoE (Li, Su, Collier 2025): N low-rank expert prompts P_i = A_i B with B shared,
SVD-initialised, mixed per input by a learned router (top-k, probationary by default).

Routing options beyond the paper's (docs/routing.md measures them): `z_loss` (ST-MoE), `assignment:
expert_choice` in training, `router_init: orthogonal` (SMoP) or `kmeans` (router and experts from the
training data, `init_from_data`), `groups` (two-level routing), and `route_by: source`, the oracle
bracket: each training source has its own expert and a row is routed by the data set it comes from;
`source_supervision` teaches a router that reads the input alone to make the oracle's split."""

from dataclasses import dataclass, field

import torch
from torch import nn

from .base import MethodConfig, MethodSpec, PromptCall, PromptModule, init_embeddings, register, svd_factors
from .growth import GrowableExperts
from .router import ASSIGNMENTS, INPUT_NORM_KINDS, NOISE_KINDS, WEIGHTINGS, OracleRouter, Router, shape_problem
from .router_input import RouterInput

CHOICES = {
    "weighting": WEIGHTINGS,
    "noise": NOISE_KINDS,
    "router_input_norm": INPUT_NORM_KINDS,
    "assignment": ASSIGNMENTS,
    "router_init": ("normal", "orthogonal", "kmeans"),
    "route_by": ("input", "source"),
}


@dataclass
class PTMoEConfig(MethodConfig):
    added_options = (
        "z_loss",
        "assignment",
        "router_init",
        "groups",
        "route_by",
        "sources",
        "source_supervision",
        "stage_experts",
        "router_input",
        "router_pool",
    )
    num_tokens: int = 40
    experts: int = 2
    rank: int = 36
    top_k: int = 1  # selective routing; top_k >= experts means non-selective
    weighting: str = "probationary"  # probationary (w = p on the selection), normalized, uniform
    noise: str = "multiplicative"  # multiplicative l(1+eps), additive l+eps, none
    noise_std: float = 0.01
    router_temperature: float = 1.0
    router_input_norm: str = "none"  # "standardize": running per-dimension standardisation (see router.py)
    # what the router reads (router_input.py): "embeddings" (the paper's) or "hidden:L", the frozen model's
    # hidden states after decoder layer L; pooled over the readable input by `router_pool` (mean, last, tail:N)
    router_input: str = "embeddings"
    router_pool: str = "mean"
    init_text: str | None = None  # SVD init text; else sampled vocabulary tokens
    init_noise: float = 0.0  # per-expert perturbation of A_i (relative std) to break symmetry
    load_balance: float = 0.0  # weight of the load-balancing loss (0 in the paper)
    z_loss: float = 0.0  # weight of the ST-MoE router z-loss (0 in the paper)
    assignment: str = "top_k"  # expert_choice: each expert takes an equal share of a training batch
    router_init: str = "normal"  # orthogonal (SMoP); kmeans: router and A_i from the training data
    groups: int = 1  # > 1: hierarchical routing, a group first, then an expert within it
    route_by: str = "input"  # source: the oracle, one expert per training source, routed by the row's set
    sources: list[str] = field(default_factory=list)  # route_by source: the training sources, in expert order
    # weight of a router-only loss in training: cross-entropy of the router's logits toward each row's
    # training source (expert i = source i); at inference the router reads the input alone
    source_supervision: float = 0.0
    # a grown adapter's experts per growth stage (set by `grow.gate: per_stage`): the selected expert's
    # weight is its probability among its own stage's experts, so new rows leave old inputs' weights alone
    stage_experts: list[int] | None = None

    def validate(self, where: str = "config") -> None:
        super().validate(where)
        RouterInput.parse(self.router_input, self.router_pool, where)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{where}: option {name!r} must be one of {allowed}, got {getattr(self, name)!r}")
        problem = shape_problem(self.experts, self.groups, self.stage_experts)
        if problem:
            raise ValueError(f"{where}: option {problem[0]!r} {problem[1]}")
        if (
            (self.route_by == "source" or self.source_supervision > 0)
            and self.sources
            and len(self.sources) != self.experts
        ):
            raise ValueError(
                f"{where}: route_by source needs one expert per training source: experts={self.experts}, "
                f"{len(self.sources)} sources"
            )


class PTMoEPrompt(GrowableExperts, PromptModule):
    routed = True  # and growable: its experts are rows of A and of the router (growth.py)

    def __init__(self, cfg: PTMoEConfig, embeddings: nn.Embedding, tokenizer=None, generator=None):
        super().__init__()
        self.num_tokens = cfg.num_tokens
        H = embeddings.weight.shape[1]
        A, B = svd_factors(
            init_embeddings(embeddings, cfg.num_tokens, tokenizer, cfg.init_text, generator, min_distinct=cfg.rank),
            cfg.rank,
            generator,
        )
        As = A.unsqueeze(0).repeat(cfg.experts, 1, 1)
        if cfg.init_noise > 0:
            As = As + torch.randn(As.shape, generator=generator) * cfg.init_noise * A.std()
        self.A = nn.Parameter(As)  # [N, T, R]
        self.B = nn.Parameter(B)  # [R, H]
        self.load_balance, self.z_loss = cfg.load_balance, cfg.z_loss
        self.route_by, self.sources = cfg.route_by, list(cfg.sources)
        self.source_supervision = cfg.source_supervision
        self.reads_row_sources = cfg.route_by == "source" or cfg.source_supervision > 0
        self.data_init = cfg.router_init == "kmeans"
        self.router_reads = RouterInput.parse(cfg.router_input, cfg.router_pool)
        router = OracleRouter if cfg.route_by == "source" else Router  # the oracle bracket is a router of its own
        self.router = router(H, cfg.experts, **router_options(cfg))

    def forward(self, input_embeds, attention_mask, row_sources: list[str] | None = None) -> PromptCall:
        given = self.source_experts(row_sources, input_embeds.device) if self.route_by == "source" else None
        x = self.router_features(input_embeds, attention_mask)
        weights, routing = self.router(x) if given is None else self.router(x, given)
        terms = [(self.load_balance, routing.balance_loss), (self.z_loss, routing.z_loss)]
        if self.source_supervision > 0 and self.training and row_sources is not None:
            terms.append((self.source_supervision, self.source_loss(x, row_sources)))
        aux = [w * t for w, t in terms if w > 0]
        # mix the small A_i first (B x T x R), then one matmul with the shared B
        prompt = torch.einsum("bn,ntr->btr", weights, self.A) @ self.B
        return PromptCall(prompt, routing, sum(aux) if aux else None)

    def source_loss(self, x: torch.Tensor, row_sources: list[str]) -> torch.Tensor:
        """Cross-entropy of the router's (noise-free) logits on its input x toward each row's training source:
        it teaches the router the split the oracle is given, from the input alone (what it reads at inference)."""
        logits = self.router.clean_logits(x)
        return torch.nn.functional.cross_entropy(logits.float(), self.source_experts(row_sources, logits.device))

    def source_experts(self, row_sources: list[str] | None, device) -> torch.Tensor:
        """The oracle: each row's expert is the index of its training source (an evaluation set maps to
        the source whose data set name is the longest prefix of its own: squad_shifts_nyt -> squad)."""
        if row_sources is None:
            raise ValueError("route_by source: the rows' data sets were not given (row_sources=)")
        return torch.tensor([source_index(s, self.sources) for s in row_sources], device=device)

    @torch.no_grad()
    def init_from_data(self, pooled: torch.Tensor, texts: list[torch.Tensor], generator=None) -> list[int] | None:
        """k-means (k = experts) of the pooled training inputs as the router's starting point, and each
        A_i from the embeddings of its cluster's most central input (projected on the shared B).
        pooled: [M, H] router inputs; texts: the M inputs' token embeddings [len, H]. -> cluster sizes
        (None: this adapter starts from its config, not from data)."""
        if not self.data_init:
            return None
        if self.router.input_norm == "standardize":  # the statistics the router would gather, all at once
            self.router.input_mean.copy_(pooled.mean(0))
            self.router.input_var.copy_(pooled.var(0, unbiased=False))
            self.router.input_count.fill_(len(pooled))
        z = self.router.router_input(pooled)
        centroids, assign = kmeans(z, self.router.experts, generator)
        self.router.init_from_centroids(centroids)
        B_pinv = torch.linalg.pinv(self.B.float())  # [H, R]
        for i in range(self.router.experts):
            members = (assign == i).nonzero().flatten()
            if len(members) == 0:
                continue
            central = members[(z[members] - centroids[i]).norm(dim=-1).argmin()]
            # its last T tokens: the question and passage end; the first are the template, the same in every row
            E = texts[int(central)][-self.num_tokens :].float()
            if len(E) < self.num_tokens:
                E = torch.cat([E.new_zeros(self.num_tokens - len(E), E.shape[1]), E])
            self.A[i].copy_(E.to(B_pinv) @ B_pinv)
        return torch.bincount(assign, minlength=self.router.experts).tolist()


def router_options(cfg: PTMoEConfig) -> dict:
    """The router's parts, by name, from the method's options."""
    return dict(
        bias=True,
        noise=cfg.noise,
        noise_std=cfg.noise_std,
        top_k=cfg.top_k,
        weighting=cfg.weighting,
        temperature=cfg.router_temperature,
        input_norm=cfg.router_input_norm,
        assignment=cfg.assignment,
        init="orthogonal" if cfg.router_init == "orthogonal" else "normal",
        groups=cfg.groups,
        stages=cfg.stage_experts,
    )


def source_index(name: str, sources: list[str]) -> int:
    if name in sources:
        return sources.index(name)
    dataset = name.split("/")[0]
    matches = [(len(d), i) for i, d in enumerate(s.split("/")[0] for s in sources) if d and dataset.startswith(d)]
    if not matches:
        raise ValueError(f"route_by source: {name!r} matches none of the training sources {sources}")
    return max(matches)[1]


def kmeans(x: torch.Tensor, k: int, generator=None, iters: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: -> centroids [k, H], assignment [M]."""
    centroids = x[torch.randint(len(x), (1,), generator=generator)]
    while len(centroids) < k:  # k-means++: the next centre far from the chosen ones
        d = torch.cdist(x, centroids).min(1).values.pow(2)
        d = d if d.sum() > 0 else torch.ones_like(d)  # every point on a centre already: any will do
        centroids = torch.cat([centroids, x[torch.multinomial(d / d.sum(), 1, generator=generator)]])
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)
        moved = torch.stack([x[assign == i].mean(0) if (assign == i).any() else centroids[i] for i in range(k)])
        if torch.allclose(moved, centroids):
            break
        centroids = moved
    return centroids, torch.cdist(x, centroids).argmin(1)


def _count(c, m):
    H, N, T, R, G = m.hidden_size, c.experts, c.num_tokens, c.rank, c.groups
    return N * T * R + R * H + N * H + N + (G * H + G if G > 1 else 0)


register(MethodSpec("ptmoe", PTMoEConfig, PTMoEPrompt, num_params=_count))

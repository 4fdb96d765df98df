"""Routing value and mutual information, where the truth is known by construction, and the
routing mechanisms against plain reference computations."""

import json
from pathlib import Path

import pytest
import torch

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_shape
from ptmoe.collate import pad_batch
from ptmoe.config.loading import load_config
from ptmoe.evaluation.evaluate import evaluate
from ptmoe.evaluation.routing import mutual_information_bits
from ptmoe.methods.ptmoe import kmeans, source_index
from ptmoe.methods.router import UNIFORM, Router, expert_choice, replaced_routing

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = {"num_tokens": 4, "experts": 2, "rank": 3}


def quiet(*args, **kwargs):
    pass


def tiny_model(**opts):
    base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
    return AdaptedModel(base, "ptmoe", {**OPTS, **opts}, tok, seed=0), tok


def write_set(path, word, n=4):
    rows = [
        {"context": f"The {word} is {word}{i}.", "question": f"What is the {word}?", "answers": [f"{word}{i}"]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def eval_config(tmp_path, *extra):
    sets = [write_set(tmp_path / "alpha.jsonl", "sun"), write_set(tmp_path / "beta.jsonl", "river")]
    return load_config(
        None,
        [
            "model=shape:tiny",
            "dtype=fp32",
            f"data.eval={json.dumps(sets)}",
            "eval.batch_size=4",
            "eval.max_new_tokens={qa: 3}",
            *extra,
        ],
    ), sets


def test_mutual_information_known_cases():
    assert mutual_information_bits({"a": [10, 0], "b": [0, 10]}) == pytest.approx(1.0)
    assert mutual_information_bits({"a": [5, 5], "b": [5, 5]}) == pytest.approx(0.0)
    assert mutual_information_bits({"a": [10, 0], "b": [10, 0]}) == pytest.approx(0.0)
    # four sets on four experts: 2 bits
    assert mutual_information_bits(
        {s: [10 * (i == j) for j in range(4)] for i, s in enumerate("abcd")}
    ) == pytest.approx(2.0)


def test_a_router_that_splits_two_sets_perfectly_has_one_bit(tmp_path):
    cfg, sets = eval_config(tmp_path)
    model, tok = tiny_model(route_by="source", sources=["alpha", "beta"])  # the oracle: each set its own expert
    res = evaluate(cfg, model=model, tok=tok, log=quiet, progress=False)
    router = res["router"]
    assert router["mutual_information_bits"] == pytest.approx(1.0)
    assert {s: v["expert_share"] for s, v in router["per_set"].items()} == {"alpha": [1.0, 0.0], "beta": [0.0, 1.0]}


def test_identical_experts_have_routing_value_exactly_zero(tmp_path):
    cfg, _ = eval_config(tmp_path)
    model, tok = tiny_model(router_input_norm="standardize")
    with torch.no_grad():  # every expert the same (the paper's init), a router that splits inputs
        model.adapter.A.copy_(torch.randn(model.adapter.A.shape[1:]).expand_as(model.adapter.A) * 5)
        model.adapter.router.linear.weight.normal_(0, 3.0)
    res = evaluate(cfg, model=model, tok=tok, log=quiet, progress=False)
    value = res["router"]["routing_value"]
    assert value["value"] == [0.0, 0.0, 0.0]
    assert set(value["replaced"]) == {"expert 0", "expert 1", UNIFORM}
    assert all(v == value["routed"] for v in value["replaced"].values())


def test_routing_value_off_skips_the_replacements(tmp_path):
    cfg, _ = eval_config(tmp_path, "eval.routing_value=false")
    model, tok = tiny_model()
    res = evaluate(cfg, model=model, tok=tok, log=quiet, progress=False)
    assert "routing_value" not in res["router"] and "mutual_information_bits" in res["router"]


def test_replaced_routing_keeps_each_rows_weight_on_one_expert_or_spread():
    torch.manual_seed(0)
    model, tok = tiny_model(experts=3, top_k=1)
    prompt = model.adapter
    prompt.eval()
    x = torch.randn(5, 7, prompt.B.shape[1])
    mask = torch.ones(5, 7)
    call = prompt.prompt_call(x, mask)
    routed, mass = call.prompt, call.routing.weights.sum(-1)  # p of the chosen expert (probationary)
    with replaced_routing(model, 2):
        forced = prompt.soft_prompt(x, mask)
    with replaced_routing(model, UNIFORM):
        uniform = prompt.soft_prompt(x, mask)
    A, B = prompt.A.detach(), prompt.B.detach()
    torch.testing.assert_close(forced, mass[:, None, None] * (A[2] @ B))
    torch.testing.assert_close(uniform, mass[:, None, None] * (A.mean(0) @ B))
    torch.testing.assert_close(prompt.soft_prompt(x, mask), routed)  # restored after the block


def test_expert_choice_gives_each_expert_its_share_even_when_all_prefer_one():
    probs = torch.tensor([[0.9, 0.1]] * 6 + [[0.6, 0.4]] * 2)
    sel = expert_choice(probs)
    assert sel.sum(0).tolist() == [4.0, 4.0] and sel.sum(1).tolist() == [1.0] * 8
    # the most confident rows keep the expert they prefer
    assert sel[:4, 0].tolist() == [1.0] * 4
    r = Router(4, 2, assignment="expert_choice", noise="none")
    r.train()
    _, routing = r(torch.randn(8, 4) + torch.tensor([5.0, 0, 0, 0]))
    assert routing.selected.sum(0).tolist() == [4.0, 4.0]
    r.eval()  # top-1 at inference
    _, routing = r(torch.randn(8, 4))
    assert torch.equal(routing.selected.argmax(-1), routing.probs.argmax(-1))


def test_hierarchical_routing_is_group_then_expert_probationary():
    torch.manual_seed(1)
    r = Router(6, 4, groups=2, noise="none")
    r.eval()
    x = torch.randn(9, 6)
    weights, routing = r(x)
    pg = torch.softmax(r.group_linear(x), -1)
    logits = r.linear(x)
    for i in range(9):  # a plain loop: the group, then the best expert of that group
        g = int(pg[i].argmax())
        members = [2 * g, 2 * g + 1]
        inner = torch.softmax(logits[i, members], -1)
        e = members[int(inner.argmax())]
        expected = torch.zeros(4)
        expected[e] = pg[i, g] * inner.max()
        torch.testing.assert_close(weights[i], expected)
        assert routing.selected[i].tolist() == [float(j == e) for j in range(4)]


def test_z_loss_is_added_to_the_adapters_aux_loss():
    model, tok = tiny_model(z_loss=0.5, load_balance=0.25, noise="none")
    prompt = model.adapter
    x, mask = torch.randn(4, 5, prompt.B.shape[1]), torch.ones(4, 5)
    call = prompt.prompt_call(x, mask)
    logits = prompt.router.linear(prompt.router.router_input(x.mean(1)))
    z = torch.logsumexp(logits, -1).pow(2).mean()
    torch.testing.assert_close(call.routing.z_loss, z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(call.aux_loss, 0.5 * z + 0.25 * call.routing.balance_loss, rtol=1e-4, atol=1e-5)


def test_orthogonal_router_init_has_orthonormal_rows():
    r = Router(16, 4, init="orthogonal")
    torch.testing.assert_close(r.linear.weight @ r.linear.weight.T, torch.eye(4), atol=1e-5, rtol=0)


def test_kmeans_init_sends_each_cluster_of_training_inputs_to_its_own_expert():
    g = torch.Generator().manual_seed(0)
    model, tok = tiny_model(router_init="kmeans", router_input_norm="standardize")
    H = model.adapter.B.shape[1]
    centres = torch.randn(2, H, generator=g) * 4
    pooled = torch.cat([centres[0] + torch.randn(20, H, generator=g), centres[1] + torch.randn(20, H, generator=g)])
    texts = [p.expand(6, H) for p in pooled]
    sizes = model.adapter.init_from_data(pooled, texts, g)
    assert sorted(sizes) == [20, 20]
    model.adapter.eval()
    _, routing = model.adapter.router(pooled)
    chosen = routing.selected.argmax(-1)
    assert len(set(chosen[:20].tolist())) == 1 and len(set(chosen[20:].tolist())) == 1
    assert chosen[0] != chosen[20]
    centroids, assign = kmeans(pooled, 2, torch.Generator().manual_seed(3))
    assert sorted(torch.bincount(assign).tolist()) == [20, 20]


def test_init_from_data_reads_only_the_context_of_training_rows():
    model, tok = tiny_model(router_init="kmeans")
    q, a = tok("what is it?")["input_ids"], tok(" a long answer here", add_special_tokens=False)["input_ids"]
    rows = [{"input_ids": q + a, "labels": [-100] * len(q) + a}]
    seen = {}
    model.adapter.init_from_data = lambda pooled, texts, g: seen.update(n=len(texts[0]))
    model.init_from_data(rows)
    assert seen["n"] == len(q)  # the answer's tokens are never read


def test_source_index_maps_evaluation_sets_to_training_sources():
    sources = ["squad/train", "drop/train", "ropes/train"]
    assert source_index("drop/heldout", sources) == 1
    assert source_index("squad_shifts_nyt/test", sources) == 0
    with pytest.raises(ValueError, match="matches none"):
        source_index("coqa/heldout", sources)


def test_oracle_routes_each_training_row_by_its_set():
    model, tok = tiny_model(route_by="source", sources=["a/train", "b/train"])
    batch = pad_batch([{"input_ids": tok(t)["input_ids"]} for t in ["x y", "z", "w"]], tok.pad_token_id, "left")
    out = model(batch["input_ids"], batch["attention_mask"], row_sources=["b/train", "a/train", "b/train"])
    assert out.routing.selected.argmax(-1).tolist() == [1, 0, 1]
    assert out.routing.weights.sum(-1).tolist() == [1.0, 1.0, 1.0]
    tokens, routing = model.generate(
        batch["input_ids"],
        batch["attention_mask"],
        max_new_tokens=1,
        row_sources=["a/x", "b/y", "a/z"],
        return_routing=True,
    )
    assert routing.selected.argmax(-1).tolist() == [0, 1, 0] and tokens.shape == (3, 1)
    with pytest.raises(ValueError, match="data sets were not given"):  # nothing is kept from the last call
        model(batch["input_ids"], batch["attention_mask"])


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="'assignment'"):
        tiny_model(assignment="random")
    with pytest.raises(ValueError, match="'groups'"):
        tiny_model(experts=3, groups=2)
    with pytest.raises(ValueError, match="one expert per training source"):
        tiny_model(route_by="source", sources=["a", "b", "c"])


def compare_config(name):
    """configs/<name>.yaml as `ptmoe compare` reads it: the raw file and each method entry's full config."""
    import yaml

    from ptmoe.experiments.plan import method_config, shared_config

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    shared = shared_config(raw, str(path))
    return raw, {m["name"]: method_config(shared, m, str(path)) for m in raw["methods"]}


@pytest.mark.parametrize("name", ["routing-mix", "routing-qa-gpu", "routing-qa4"])
def test_routing_configs_parse_and_bracket_the_routed_rows(name):
    raw, configs = compare_config(name)
    opts = {method: cfg["method_options"] for method, cfg in configs.items()}
    assert raw["baseline"] in {"PT", "PT-MoE 1 expert"} & set(opts) and opts["PT-MoE 1 expert"]["experts"] == 1
    oracle = opts["PT-MoE oracle"]
    assert oracle["route_by"] == "source" and oracle["experts"] == len(raw["data"]["train"])


def test_source_supervision_teaches_the_router_the_oracles_split_from_the_input_alone():
    torch.manual_seed(0)
    model, tok = tiny_model(source_supervision=1.0, sources=["a", "b"], noise="none")
    prompt = model.adapter
    H = prompt.B.shape[1]
    x = torch.cat([torch.randn(8, 5, H) + 2.0, torch.randn(8, 5, H) - 2.0])
    mask, sets = torch.ones(16, 5), ["a"] * 8 + ["b"] * 8
    opt = torch.optim.Adam(prompt.router.parameters(), lr=0.05)
    prompt.train()
    for _ in range(30):
        call = prompt.prompt_call(x, mask, row_sources=sets)
        opt.zero_grad()
        call.aux_loss.backward()
        opt.step()
    prompt.eval()
    call = prompt.prompt_call(x, mask)  # at inference the router reads the input alone
    assert call.routing.selected.argmax(-1).tolist() == [0] * 8 + [1] * 8


def test_routing_value_changes_the_run_key_only_where_a_router_is_evaluated_without_it():
    from ptmoe.config.loading import load_config
    from ptmoe.experiments.store import run_key

    def key(*over):
        return run_key(load_config(None, list(over)))

    assert key("eval.routing_value=false") != key()  # a routed run without the replacements is another run
    assert key("method=pt", "eval.routing_value=false") == key("method=pt")  # pt has no router: same run


def test_own_files_name_their_source_for_the_oracle_before_any_training(tmp_path):
    """Evaluation files whose names don't say their training source: one line before any model loads, naming
    the set and the sources; data.eval_source says which source each belongs to, and the oracle routes by it."""
    import json

    from ptmoe.config.loading import load_config
    from ptmoe.config.presets import eval_route, resolve_method_options

    rows = lambda ans: "".join(
        json.dumps({"question": f"q{i}?", "context": f"passage {i} {ans}", "answers": [ans]}) + "\n" for i in range(4)
    )
    for name, ans in (("disfl_train", "span"), ("boolq_train", "yes"), ("disfl_eval", "span"), ("boolq_eval", "no")):
        (tmp_path / f"{name}.jsonl").write_text(rows(ans))
    files = lambda *names: "[" + ", ".join(str(tmp_path / f"{n}.jsonl") for n in names) + "]"
    base = [
        "model=shape:tiny",
        f"data.train={files('disfl_train', 'boolq_train')}",
        f"data.eval={files('disfl_eval', 'boolq_eval')}",
        "method_options={experts: 2, route_by: source}",
    ]
    with pytest.raises(
        ValueError,
        match=r"data.eval '.*disfl_eval.jsonl' \(set 'disfl_eval'\) matches none of the training sources \['disfl_train', 'boolq_train'\]; name its source: data.eval_source=\{disfl_eval.jsonl:",
    ):
        resolve_method_options(load_config(None, base))
    cfg = load_config(
        None, [*base, "data.eval_source={disfl_eval.jsonl: disfl_train.jsonl, boolq_eval.jsonl: boolq_train.jsonl}"]
    )
    opts = resolve_method_options(cfg)
    assert [eval_route(cfg, spec, opts["sources"]) for spec in cfg["data"]["eval"]] == ["disfl_train", "boolq_train"]
    bad = load_config(None, [*base, "data.eval_source={disfl_eval.jsonl: nowhere.jsonl}"])
    with pytest.raises(
        ValueError, match=r"data.eval_source: .*disfl_eval.jsonl' -> 'nowhere.jsonl', which is not one of data.train"
    ):
        resolve_method_options(bad)


def test_the_oracle_routes_own_evaluation_files_by_the_source_they_are_named_for(tmp_path):
    import json

    from ptmoe.config.loading import load_config
    from ptmoe.evaluation.evaluate import evaluate
    from ptmoe.training.loop import train

    for name, ans in (("a_train", "alpha"), ("b_train", "yes"), ("a_dev", "alpha"), ("b_dev", "no")):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(
                json.dumps({"question": f"q{i}?", "context": f"p {i} {ans}", "answers": [ans]}) + "\n" for i in range(6)
            )
        )
    f = lambda *n: "[" + ", ".join(str(tmp_path / f"{x}.jsonl") for x in n) + "]"
    cfg = load_config(
        None,
        [
            "model=shape:tiny",
            f"data.train={f('a_train', 'b_train')}",
            f"data.eval={f('a_dev', 'b_dev')}",
            "data.eval_source={a_dev.jsonl: a_train.jsonl, b_dev.jsonl: b_train.jsonl}",
            "data.valid_examples=2",
            "method_options={experts: 2, route_by: source, num_tokens: 4, rank: 2}",
            "train.steps=2",
            "train.batch_size=2",
            "eval.max_new_tokens={qa: 2}",
            "eval.routing_value=false",
            f"output_dir={tmp_path / 'run'}",
        ],
    )
    train(cfg)
    res = evaluate(cfg, str(tmp_path / "run" / "best"), str(tmp_path / "eval"), log=lambda *a: None, progress=False)
    shares = {s: v["expert_share"] for s, v in res["router"]["per_set"].items()}
    assert shares == {"a_dev": [1.0, 0.0], "b_dev": [0.0, 1.0]}, shares


def test_compare_checks_the_oracle_evaluation_sets_before_any_run(tmp_path, capsys):
    import json

    import yaml

    from ptmoe.cli import main

    for name in ("a_train", "b_train", "a_dev", "b_dev"):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"question": "q?", "context": "p x", "answers": ["x"]}) + "\n"
        )
    raw = {
        "model": "shape:tiny",
        "output_dir": str(tmp_path / "cmp"),
        "data": {"train": ["a_train.jsonl", "b_train.jsonl"], "eval": ["a_dev.jsonl", "b_dev.jsonl"]},
        "train": {"steps": 1},
        "seeds": [0],
        "baseline": "one",
        "methods": [
            {"name": "one", "method": "ptmoe", "method_options": {"experts": 1}},
            {"name": "oracle", "method": "ptmoe", "method_options": {"experts": 2, "route_by": "source"}},
        ],
    }
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(raw))
    assert main(["compare", str(tmp_path / "cmp.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'a_dev'" in err and "data.eval_source" in err
    assert not (tmp_path / "cmp" / "runs").exists()  # nothing trained


def test_budget_sweep_reuses_the_routing_tables_runs_and_brackets_every_budget():
    """configs/routing-qa4-budget.yaml: its 60-step rows are routing-qa4's runs (same keys, so never rerun),
    and each budget has one expert and the oracle, differing only in training steps and routing value."""
    from ptmoe.experiments.store import run_key

    table, rows = compare_config("routing-qa4")
    budget, sweep = compare_config("routing-qa4-budget")
    assert budget["output_dir"] == table["output_dir"] and budget["seeds"] == table["seeds"]
    for bracket in ("PT-MoE 1 expert", "PT-MoE oracle"):
        assert run_key(sweep[f"{bracket} @60"]) == run_key(rows[bracket])
        for steps in (120, 240):
            cfg = sweep[f"{bracket} @{steps}"]
            assert cfg["train"]["steps"] == steps
            assert cfg["method_options"] == rows[bracket]["method_options"] and cfg["data"] == rows[bracket]["data"]
    assert budget["baseline"] in sweep
    for steps in (120, 240):  # the oracle's lead at a budget is taken against one expert at that budget
        assert next(m for m in budget["methods"] if m["name"] == f"PT-MoE oracle @{steps}")["baseline"] == (
            f"PT-MoE 1 expert @{steps}"
        )

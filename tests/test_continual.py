"""Growing a trained PT-MoE adapter (`ptmoe train --from ADAPTER` with grow:), the router replay store,
and `ptmoe continual`, on the tiny Llama shape with wider random weights (saved to a folder, used by
path) so that answers depend on the prompt and the adapter."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model, load_shape
from ptmoe.cli import main
from ptmoe.config.loading import load_config
from ptmoe.experiments.continual import continual
from ptmoe.training.grow_source import read_store
from ptmoe.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["sun", "river", "stone", "cloud", "sky", "ox", "paper", "music"]
TASKS = {"t1": "The {a} is {b}.", "t2": "Yes: {b} equals the {a}, they say."}
OPTIONS = "method_options={num_tokens: 4, experts: 2, rank: 2}"


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    """A base model folder and two small QA tasks of different passage forms."""
    root = tmp_path_factory.mktemp("continual")
    base, tok = load_shape("tiny")
    torch.manual_seed(0)
    with torch.no_grad():  # wider weights than the init: answers vary with the input
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    rng = random.Random(0)
    for name, form in TASKS.items():
        rows = []
        for _ in range(24):
            a, b = rng.sample(WORDS, 2)
            rows.append({"context": form.format(a=a, b=b), "question": f"What is the {a}?", "answers": [b]})
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def overrides(root: Path, task: str, out: Path, *extra, ptmoe: bool = True) -> list[str]:
    return [
        f"model={root / 'base'}",
        "dtype=fp32",
        f"output_dir={out}",
        f"data.train=['{root / task}.jsonl']",
        f"data.eval=['{root / task}.jsonl']",
        "data.valid_examples=4",
        "data.max_eval_examples=2",
        "train.batch_size=4",
        "train.save_every=100",
        "train.lr=0.3",
        *([OPTIONS, "grow.store_size=16"] if ptmoe else []),
        *extra,
    ]


def run_train(args: list[str]) -> str:
    return train(load_config(None, args), overwrite=True, log=quiet)["output_dir"] + "/best"


@pytest.fixture(scope="module")
def source(files):
    return run_train(overrides(files, "t1", files / "source", "train.steps=4"))


@pytest.fixture(scope="module")
def grown(files, source):
    """Grown by one expert on t2, old parts frozen, with weight decay (which moves zero-gradient parameters),
    weighing experts over every expert (grow.gate=shared, the paper's probationary weight)."""
    return run_train(
        overrides(
            files,
            "t2",
            files / "grown",
            "train.steps=4",
            "train.weight_decay=0.1",
            f"init_from={source}",
            "grow.experts=1",
            "grow.gate=shared",
        )
    )


def test_grown_adapter_keeps_old_parts_bit_identical(source, grown):
    old, new = load_file(f"{source}/adapter_model.safetensors"), load_file(f"{grown}/adapter_model.safetensors")
    assert new["A"].shape[0] == old["A"].shape[0] + 1 == 3
    assert torch.equal(new["A"][:2], old["A"]) and torch.equal(new["B"], old["B"])
    assert torch.equal(new["router.linear.weight"][:2], old["router.linear.weight"])
    assert torch.equal(new["router.linear.bias"][:2], old["router.linear.bias"])
    # the new expert and router row did train: away from where they started (the old experts' mean)
    assert not torch.allclose(new["A"][2], old["A"].mean(0), atol=1e-3)
    meta = json.loads(Path(grown, "adapter_config.json").read_text())
    assert meta["method"] == "ptmoe" and meta["config"]["experts"] == 3
    first, last = meta["lineage"]
    assert first["from"] is None and first["data"][0].endswith("t1.jsonl")
    assert last["from"] == source and last["data"][0].endswith("t2.jsonl") and last["experts_added"] == 1
    store = read_store(grown)
    assert store["inputs"].shape == (32, 64) and store["tasks"].tolist() == [0] * 16 + [1] * 16
    assert len(store["names"]) == 2
    # the old stage's entries are carried over unchanged
    assert torch.equal(store["inputs"][:16], read_store(source)["inputs"])


def test_grown_adapter_with_its_own_B_rows_keeps_every_old_part_bit_identical(files, source):
    """grow.rank: the new expert gets B rows of its own; the old experts (their new columns 0), the old B rows
    and the old router rows stay bit-identical, so an old expert's prompt is what it was."""
    own = run_train(
        overrides(
            files,
            "t2",
            files / "grown_own_rows",
            "train.steps=4",
            "train.weight_decay=0.1",
            f"init_from={source}",
            "grow.experts=1",
            "grow.rank=2",
        )
    )
    old, new = load_file(f"{source}/adapter_model.safetensors"), load_file(f"{own}/adapter_model.safetensors")
    assert new["A"].shape == (3, 4, 4) and new["B"].shape == (4, 64)
    assert torch.equal(new["A"][:2, :, :2], old["A"]) and not new["A"][:2, :, 2:].any()
    assert torch.equal(new["B"][:2], old["B"])
    assert torch.equal(new["router.linear.weight"][:2], old["router.linear.weight"])
    assert torch.equal(new["router.linear.bias"][:2], old["router.linear.bias"])
    # the new expert trained: away from where it started (the old experts' mean on the old columns)
    assert not torch.allclose(new["A"][2, :, :2], old["A"].mean(0), atol=1e-3)
    for i in range(2):  # each old expert's prompt, A_i B, as the source adapter made it
        torch.testing.assert_close(new["A"][i] @ new["B"], old["A"][i] @ old["B"], rtol=0, atol=1e-6)
    meta = json.loads(Path(own, "adapter_config.json").read_text())
    assert meta["config"]["rank"] == 4 and meta["lineage"][-1]["b_rows_added"] == 2
    assert "old B rows" in meta["lineage"][-1]["frozen"]
    lm, tok = load_base_model(str(files / "base"))
    AdaptedModel.from_pretrained(own, lm, tok)  # an ordinary ptmoe adapter of rank 4


@pytest.fixture(scope="module")
def grown_per_stage(files, source):
    """Grown like `grown`, with the route loss (new inputs to the new expert) and grow.gate=per_stage (the default)."""
    common = ["train.steps=4", f"init_from={source}", "grow.experts=1", "grow.route_weight=1"]
    return run_train(overrides(files, "t2", files / "grown_per_stage", *common, "grow.gate=per_stage"))


def prompts_on_old_task(files, adapter: str):
    """The adapter's soft prompts and selected experts for the first task's inputs (eval mode: no noise)."""
    lm, tok = load_base_model(str(files / "base"))
    model = AdaptedModel.from_pretrained(adapter, lm, tok).eval()
    texts = [json.loads(line)["context"] for line in (files / "t1.jsonl").read_text().splitlines()]
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        call = model.prompt_module.prompt_call(lm.get_input_embeddings()(batch["input_ids"]), batch["attention_mask"])
    return call.prompt, call.routing.selected.argmax(-1)


def test_per_stage_gate_gives_old_inputs_on_old_experts_their_old_prompt(files, source, grown, grown_per_stage):
    """With one softmax over every expert, a new router row takes probability from old inputs and scales
    their prompt down even where they stay on their old expert; per stage, such an input's prompt is the
    one the source adapter gave it."""
    before, _ = prompts_on_old_task(files, source)
    assert json.loads(Path(grown_per_stage, "adapter_config.json").read_text())["config"]["stage_experts"] == [2, 1]
    for adapter, exact in ((grown_per_stage, True), (grown, False)):
        after, expert = prompts_on_old_task(files, adapter)
        old = expert < 2
        assert old.sum() >= 4  # enough old inputs stay on old experts to compare
        same = (after[old] - before[old]).abs().amax() < 1e-6
        assert bool(same) == exact, adapter


def routing_of_store(adapter: str, stage: int):
    """Expert picked by the adapter's router (its logits, no noise, as at inference) for each stored
    input of one stage, and the expert each was routed to when its stage ended."""
    store, sd = read_store(adapter), load_file(f"{adapter}/adapter_model.safetensors")
    rows = store["tasks"] == stage
    logits = store["inputs"][rows] @ sd["router.linear.weight"].T + sd["router.linear.bias"]
    return logits.argmax(-1), store["experts"][rows]


def routed_to_stored_expert(adapter: str) -> float:
    """Share of the first stage's stored inputs sent to the expert they were routed to then."""
    picked, stored = routing_of_store(adapter, 0)
    return (picked == stored).float().mean().item()


TINY = ["model=shape:tiny", "seed=1"]  # the tiny shape's own weights, on which the new expert helps


@pytest.fixture(scope="module")
def tiny_source(files):
    return run_train(overrides(files, "t1", files / "replay_source", "train.steps=4", *TINY))


def test_replay_keeps_old_inputs_on_old_experts(files, tiny_source):
    """A case where forgetting is in the router: the new task asks other answers of the same inputs, so
    the new expert's row (`router_init: data`: it leads by 1 at the new inputs' mean, and as the two
    means coincide, everywhere) starts with the old inputs too and training on the new task alone keeps
    them there. Replaying the stored old inputs to the router brings them back to their experts."""
    rows = [json.loads(line) for line in (files / "t1.jsonl").read_text().splitlines()]
    same_inputs = [{**r, "answers": [r["question"].split()[-1].rstrip("?")]} for r in rows]
    (files / "t1b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in same_inputs))
    common = ["train.steps=20", f"init_from={tiny_source}", "grow.experts=1", "train.lr_groups={router: 1.0}", *TINY]
    off = run_train(overrides(files, "t1b", files / "replay_off", *common, "grow.replay_weight=0"))
    on = run_train(overrides(files, "t1b", files / "replay_on", *common, "grow.replay_weight=1"))
    assert routed_to_stored_expert(on) == 1.0
    assert routed_to_stored_expert(off) < 0.5


def test_route_loss_sends_the_new_task_to_the_new_expert(files, tiny_source):
    common = ["train.steps=20", f"init_from={tiny_source}", "grow.experts=1", "train.lr_groups={router: 1.0}", *TINY]
    routed = run_train(overrides(files, "t2", files / "route", *common, "grow.route_weight=1"))
    picked, _ = routing_of_store(routed, 1)
    assert picked.tolist() == [2] * 16
    assert json.loads(Path(routed, "adapter_config.json").read_text())["lineage"][-1]["route_weight"] == 1.0


def test_router_fit_after_the_stage_moves_only_the_new_router_rows(files, tiny_source):
    """grow.router_fit_steps: the stage barely trains its router (new rows from zeros, a router rate of 1e-9),
    so the new task's stored inputs are not all on the new expert; the router-only fit after the stage sends
    them there and keeps the old stage's stored inputs on their experts (read with a plain matrix product
    from the saved tensors), and changes nothing else: against the same run without it, every tensor of
    best/ and final/ is bit-identical but the new expert's router row."""
    common = [
        "train.steps=2",
        f"init_from={tiny_source}",
        "grow.experts=1",
        "grow.router_init=zeros",
        "grow.route_weight=1",
        "train.lr_groups={router: 1.0e-9}",
        *TINY,
    ]
    plain = run_train(overrides(files, "t2", files / "fit_off", *common))
    fitted = run_train(overrides(files, "t2", files / "fit_on", *common, "grow.router_fit_steps=300"))
    assert (routing_of_store(plain, 1)[0] == 2).float().mean() < 1.0
    picked, _ = routing_of_store(fitted, 1)
    assert picked.tolist() == [2] * 16
    assert routed_to_stored_expert(fitted) == 1.0
    for folder in ("best", "final"):
        a = load_file(f"{Path(plain).parent / folder}/adapter_model.safetensors")
        b = load_file(f"{Path(fitted).parent / folder}/adapter_model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            if name.startswith("router.linear."):
                assert torch.equal(a[name][:2], b[name][:2]), name  # the old rows: frozen
                assert not torch.equal(a[name][2:], b[name][2:]), name
            else:
                assert torch.equal(a[name], b[name]), name
    meta = json.loads(Path(fitted, "adapter_config.json").read_text())
    assert meta["router_fit"] is True and meta["lineage"][-1]["router_fit_steps"] == 300


def test_grown_adapter_loads_generates_and_serves(files, grown):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    from ptmoe.data.format import build_prompt_text
    from ptmoe.recipes.generate import answer
    from ptmoe.serving.adapters import load_served
    from ptmoe.serving.app import create_app
    from ptmoe.serving.engine_hf import HFEngine
    from ptmoe.serving.server import Background

    base = str(files / "base")
    lm, tok = load_base_model(base)
    model = AdaptedModel.from_pretrained(grown, lm, tok)
    assert model.adapter.A.shape[0] == 3
    lines = (files / "t1.jsonl").read_text().splitlines()[:3] + (files / "t2.jsonl").read_text().splitlines()[:3]
    rows = [{**json.loads(line), "task": "qa"} for line in lines]
    batched = answer([dict(r) for r in rows], base, {"grown": grown}, batch_size=6, max_new_tokens=6, dtype="fp32")
    alone = [answer([dict(r)], base, {"grown": grown}, max_new_tokens=6, dtype="fp32")[0] for r in rows]
    assert batched == alone and len(set(batched)) > 1
    served = load_served(base, {"grown": grown})
    with Background(create_app(HFEngine(served), served, max_batch=8, batch_wait=0.1)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        got = [
            client.completions.create(
                model="grown", prompt=build_prompt_text(r, served.tokenizer), max_tokens=6, temperature=0
            )
            .choices[0]
            .text.strip()
            for r in rows
        ]
    assert got == batched


def test_lm_eval_answers_with_a_grown_adapter_as_its_model_does(files, grown):
    """lm-eval's `ptmoe` model loads the grown adapter by path (adapter=DIR) and generates what the
    grown model generates for each prompt alone."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from ptmoe.interop.lm_eval_model import PtmoeLM

    base = str(files / "base")
    lm, tok = load_base_model(base)
    model = AdaptedModel.from_pretrained(grown, lm, tok).eval()
    prompts = [json.loads(line)["context"] for line in (files / "t2.jsonl").read_text().splitlines()[:3]]
    want = []
    for p in prompts:
        x = torch.tensor([tok(p)["input_ids"]])
        new = model.generate(x, torch.ones_like(x), max_new_tokens=6, eos_token_id=[tok.eos_token_id])
        want.append(tok.decode(new[0], skip_special_tokens=True))
    lm_eval_model = PtmoeLM(pretrained=base, adapter=grown, dtype="fp32", device="cpu", batch_size=3)
    assert lm_eval_model.ptmoe.adapter.A.shape[0] == 3  # the grown adapter, not its source
    got = lm_eval_model.generate_until(
        [Instance("generate_until", {}, (p, {"until": ["\n\n"], "max_gen_toks": 6}), i) for i, p in enumerate(prompts)]
    )
    assert got == [w.split("\n\n")[0] for w in want] and len(set(got)) > 1


def test_the_grown_adapters_card_shows_its_lineage(source, grown):
    card = Path(grown, "README.md").read_text()
    rows = card.split("## Lineage")[1].split("\n\n")[1].splitlines()[2:]
    assert len(rows) == 2  # the source's stage, then the growth
    assert "| 1 | scratch |" in rows[0] and "t1.jsonl" in rows[0]
    assert f"| 2 | {source} |" in rows[1] and "t2.jsonl" in rows[1] and "| 1 |" in rows[1]


def test_export_refuses_a_grown_adapter(grown, tmp_path, capsys):
    assert main(["export", grown, str(tmp_path / "peft"), "--format", "peft"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be exported to PEFT" in err and "grown from" in err


def continual_config(files: Path, out: Path, first="t1") -> dict:
    return {
        "model": str(files / "base"),
        "dtype": "fp32",
        "output_dir": str(out),
        "method_options": {"num_tokens": 4, "experts": 2, "rank": 2},
        "grow": {"experts": 1, "store_size": 8},
        "data": {"valid_examples": 4, "max_eval_examples": 3},
        "train": {"steps": 2, "batch_size": 2, "save_every": 2, "lr": 0.3},
        "eval": {"batch_size": 4, "max_new_tokens": {"qa": 4}},
        "pt_options": {"num_tokens": 3},
        "sequence": [{"train": str(files / f"{t}.jsonl"), "eval": str(files / f"{t}.jsonl")} for t in (first, "t2")],
        "strategies": ["growth", "seq-pt", "oracle", "joint"],
        "seeds": [0],
    }


def test_continual_writes_R_and_resumes_stage_by_stage(files, tmp_path, monkeypatch):
    cfg = continual_config(files, tmp_path / "cont")
    table = continual(cfg, log=quiet)
    saved = json.loads((tmp_path / "cont" / "continual.json").read_text())
    assert saved["tasks"] == ["t1", "t2"] and set(saved["rows"]) == {"growth", "seq-pt", "oracle", "joint"}
    for name, row in saved["rows"].items():
        assert len(row["R"]) == (1 if name == "joint" else 2) and all(len(r) == 2 for r in row["R"])
        assert all(0 <= x <= 100 for r in row["R"] for x in r)
    growth = saved["rows"]["growth"]["metrics"]
    R = saved["rows"]["growth"]["R"]
    assert growth["bwt"][0] == pytest.approx(R[1][0] - R[0][0])
    assert growth["acc"][0] == pytest.approx((R[1][0] + R[1][1]) / 2)
    assert "R[stage][task]: growth" in table["markdown"] and (tmp_path / "cont" / "continual.md").exists()
    shares = saved["rows"]["growth"]["expert_share"]  # [stage][task] -> share per expert: 2, then 3 experts
    assert [[len(c) for c in row] for row in shares] == [[2, 2], [3, 3]]
    assert all(sum(c) == pytest.approx(1) for row in shares for c in row)
    assert "expert_share" not in saved["rows"]["seq-pt"] and "Where the router sent" in table["markdown"]
    # the growth targets read from those shares: t1 on its 2 old experts, t2 on the one added for it
    (kept,) = saved["rows"]["growth"]["growth_routing"]
    assert kept["stage"] == 2 and kept["old_on_old"] == pytest.approx(sum(shares[1][0][:2]))
    assert kept["new_on_new"] == pytest.approx(shares[1][1][2])
    # ΔACC against joint training (the bound growth's target is read against), by question
    joint_q = saved["rows"]["joint"]["R"][0]
    assert saved["rows"]["growth"]["acc_vs_joint"][0] == pytest.approx(growth["acc"][0] - sum(joint_q) / 2)
    assert "acc_vs_joint" not in saved["rows"]["joint"] and "ΔACC vs joint" in table["markdown"]
    # seq-pt and oracle share their first stage (the same config): 2 + 2 + 1 + 1 joint = 6 runs
    assert len(list((tmp_path / "cont" / "runs").iterdir())) == 6
    # stop after a stage: its later stage is gone; the rerun trains that one stage only
    last = saved["rows"]["growth"]["stage_keys"][0][1]
    for path in sorted((tmp_path / "cont" / "runs" / last).rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    import ptmoe.experiments.store as store_module

    trained = []
    real = store_module.train
    monkeypatch.setattr(store_module, "train", lambda c, **kw: trained.append(c) or real(c, **kw))
    again = continual(cfg, log=quiet)
    assert len(trained) == 1 and trained[0]["init_from"].endswith("/train/best")
    assert again["rows"]["growth"]["R"] == R  # the same stage, retrained the same way


def test_bad_input_is_one_line_before_any_model_loads(files, source, grown_per_stage, tmp_path, capsys, monkeypatch):
    import ptmoe.training.loop as loop_module

    monkeypatch.setattr(loop_module, "build_model", lambda *a: pytest.fail("a model was loaded"))
    other = tmp_path / "pt-adapter"  # the source adapter, relabelled as another method's
    other.mkdir()
    for f in Path(source).iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**meta, "method": "pt", "config": {"num_tokens": 4}}))
    cases = {
        "a 'pt' adapter, but this run trains method 'ptmoe'": ["--from", str(other)],
        "trained on base model": ["model=shape:smollm2-135m", "--from", source],
        "not a ptmoe adapter folder": ["--from", str(tmp_path)],
        "grow.experts: only a routed method": ["method=pt", "method_options={num_tokens: 3}"],
        "grow.gate: shared, but the --from adapter": [
            "method_options.experts=3",
            "grow.gate=shared",
            "--from",
            grown_per_stage,
        ],
        "grow.router_fit_steps: fits the new router rows of a run that grows": [
            "grow.experts=0",
            "grow.router_fit_steps=5",
        ],
        "grow.router_fit_steps: fits the router on its replay and route losses; both weights are 0": [
            "grow.router_fit_steps=5",
            "grow.replay_weight=0",
            "--from",
            source,
        ],
    }
    for expected, extra in cases.items():
        args = overrides(files, "t2", tmp_path / "out", "grow.experts=1", *extra, ptmoe="method=pt" not in extra)
        assert main(["train", *args]) == 2, expected
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    bad = continual_config(files, tmp_path / "cont")
    bad["sequence"][1]["train"] = "nosuch/train"
    with pytest.raises(ValueError, match=r"sequence\[1\]\.train: no prepared set 'nosuch/train'"):
        continual(bad, log=quiet)


def test_the_growth_router_loss_keeps_the_adapters_own_aux_terms():
    """The growth hook adds its router losses to what the forward set (balance, z-loss), never in place of it."""
    from ptmoe.training.grow import Growth

    base, tok = load_shape("tiny", dtype=torch.float32, seed=0)
    model = AdaptedModel(base, "ptmoe", {"num_tokens": 4, "experts": 2, "rank": 3, "z_loss": 0.5, "noise": "none"}, tok)
    prompt = model.adapter
    hook = Growth.__new__(Growth)  # only what the hook reads: no replay, the route loss toward expert 1
    hook.replaying, hook.g, hook.n_old = False, {"route_weight": 1.0}, 1
    x, mask = torch.randn(3, 5, prompt.B.shape[1]), torch.ones(3, 5)
    prompt.train()
    call = prompt.prompt_call(x, mask)
    own = call.aux_loss.detach().clone()
    torch.testing.assert_close(own, 0.5 * call.routing.z_loss.detach())
    grown = hook._router_loss(prompt, (x, mask), call)
    logits = prompt.router.clean_logits(x.mean(1))
    route = (logits.logsumexp(-1) - logits[:, 1:].logsumexp(-1)).mean()
    torch.testing.assert_close(grown.aux_loss.detach(), own + route.detach())


def test_the_gate_changes_a_run_key_only_when_the_run_grows(source):
    from ptmoe.config.loading import load_config
    from ptmoe.experiments.store import run_key

    def key(*over):
        return run_key(load_config(None, ["grow.store_size=8", *over]))

    assert key("grow.gate=shared") == key("grow.gate=per_stage")  # a first stage: nothing to weigh apart
    assert run_key(load_config(None, ["grow.gate=shared"])) == run_key(load_config(None, []))  # nor without a store
    growing = [f"init_from={source}", "grow.experts=1"]
    assert key(*growing, "grow.gate=shared") != key(*growing, "grow.gate=per_stage")
    assert key(*growing, "grow.router_fit_steps=0") == key(*growing)  # runs stored before the router fit
    assert key(*growing, "grow.router_fit_steps=300") != key(*growing)
    older = load_config(None, ["grow.store_size=8", *growing, "grow.gate=shared"])
    del older["grow"]["gate"]  # a run stored before the gate existed weighed over every expert: shared
    assert run_key(older) == key(*growing, "grow.gate=shared")


def test_growth_with_its_own_B_rows_runs_three_stages_and_joint_matches_its_size(files, tmp_path):
    """grow.rank: each later stage starts from an adapter of a larger rank than the config's (the stage before
    added B rows); joint training gets growth's final experts and rank."""
    t3 = tmp_path / "t3.jsonl"
    t3.write_text((files / "t1.jsonl").read_text())
    cfg = continual_config(files, tmp_path / "cont")
    cfg["sequence"].append({"train": str(t3), "eval": str(t3)})
    cfg.update(strategies=["growth", "joint"], grow={"experts": 1, "store_size": 8, "rank": 2})
    continual(cfg, log=quiet)
    saved = json.loads((tmp_path / "cont" / "continual.json").read_text())
    last = saved["rows"]["growth"]["stage_keys"][0][-1]
    meta = json.loads((tmp_path / "cont" / "runs" / last / "train" / "best" / "adapter_config.json").read_text())
    assert (meta["config"]["experts"], meta["config"]["rank"]) == (4, 6)
    joint = saved["rows"]["joint"]["stage_keys"][0][0]
    meta = json.loads((tmp_path / "cont" / "runs" / joint / "train" / "best" / "adapter_config.json").read_text())
    assert (meta["config"]["experts"], meta["config"]["rank"]) == (4, 6)


def test_a_standardising_router_grows_with_its_input_statistics_frozen(files, tmp_path):
    """The router's running input statistics (one of them a 0-dim count) are frozen with the old rows."""
    norm = OPTIONS.replace("}", ", router_input_norm: standardize}")
    source = run_train([*overrides(files, "t1", tmp_path / "s", "train.steps=2"), norm])
    grown = run_train(
        [*overrides(files, "t2", tmp_path / "g", "train.steps=2", f"init_from={source}", "grow.experts=1"), norm]
    )
    old, new = load_file(f"{source}/adapter_model.safetensors"), load_file(f"{grown}/adapter_model.safetensors")
    for name in ("router.input_mean", "router.input_var", "router.input_count"):
        assert torch.equal(new[name], old[name]), name


def test_growth_reaches_the_adapter_through_its_hooks_only():
    """training/ never names PT-MoE's tensors: the adapter grows itself (methods/growth.py)."""
    import re

    from ptmoe.training import grow, grow_source

    for module in (grow, grow_source):
        text = Path(module.__file__).read_text()
        assert not re.search(r'\["A"\]|\["B"\]|router\.linear|router\.input_|\.router\b', text), module.__name__

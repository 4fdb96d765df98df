"""`ptmoe demo`, the main job: on the embedded default model, prepare the data if needed, evaluate
the base model, train PT-MoE on a two-task mix for a short CPU budget, evaluate again, print the F1 gain
and what its router did, all measured in this run (no stored figure). Every setting is in the packaged
ptmoe/config/demo.yaml (configs/demo.yaml in a checkout); key=value overrides apply."""

from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path

from ..config.loading import load_config
from ..training.run_folder import fresh_folder

DEMO_CONFIG = Path(str(files("ptmoe") / "config" / "demo.yaml"))  # package data: found in any install


def add_arguments(p):
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted key=value overrides of the packaged demo config (ptmoe/config/demo.yaml; configs/demo.yaml in a checkout)",
    )
    p.add_argument("--config", default=None, help="another demo config")


def run(args):
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from ..config.presets import apply_preset, resolve_method_options
    from ..data import prepare
    from ..evaluation.evaluate import evaluate, format_table
    from ..evaluation.routing import plot_usage
    from ..training.loop import train

    t0 = time.time()
    cfg = load_config(args.config or DEMO_CONFIG, args.overrides)
    cfg = prepare_data(cfg, prepare, lambda *a: print("[data]", *a, flush=True))
    resolve_method_options(apply_preset(cfg))  # a bad option fails now, not after the first evaluation
    wanted = Path(str(cfg["output_dir"]).format(method=cfg["method"], seed=cfg["seed"]))
    out = fresh_folder(wanted)  # never over an earlier demo's run
    if out != wanted:
        print(f"[demo] {wanted} holds an earlier run: writing to {out}", flush=True)
    cfg["output_dir"] = str(out)
    print(f"[demo] before: the base model {cfg['model']} alone", flush=True)
    before = evaluate(cfg, None, str(out / "eval_before"))
    print(format_table(before), flush=True)
    print(
        f"[demo] training {cfg['method']} ({cfg['train']['steps']} steps of batch {cfg['train']['batch_size']})",
        flush=True,
    )
    summary = train(cfg)
    after = evaluate(cfg, str(out / "best"), str(out / "eval_after"))
    print(f"[demo] after: {cfg['method']} adapter {out / 'best'}")
    print(format_table(after))
    gain = after["average"]["f1"] - before["average"]["f1"]
    print(
        f"\n[demo] F1 {before['average']['f1']:.2f} -> {after['average']['f1']:.2f}  (gain {gain:+.2f});  "
        f"EM {before['average']['em']:.2f} -> {after['average']['em']:.2f}"
    )
    fmt, content = gain_parts(before, after)
    print(
        f"[demo] what the gain is made of: {fmt:+.2f} F1 on questions whose answer the base model already "
        f"gave inside a longer reply (format: now the bare span, hence EM), {content:+.2f} F1 on the others "
        f"(content)"
    )
    router = after.get("router") or {}
    if router:
        share = ", ".join(f"{s:.0%}" for s in router["expert_share"])
        print(
            f"[demo] router on the evaluation questions: expert share [{share}], mutual information between "
            f"task and expert {router['mutual_information_bits']:.2f} bits, mean confidence {router['router_confidence']:.2f}"
        )
        train_router = summary.get("router") or {}
        if train_router:
            share = ", ".join(f"{s:.0%}" for s in train_router["expert_share"])
            print(f"[demo] router during training: expert share [{share}]")
        value = router.get("routing_value")
        if value:
            v = value["value"]
            print(
                f"[demo] routing value on these questions: {v[0]:+.2f} F1 [{v[1]:+.2f}, {v[2]:+.2f}] (routed "
                f"{value['routed']:.2f} against the best fixed choice, {value['best_replacement']}: "
                f"{value['replaced'][value['best_replacement']]:.2f})"
            )
        plot_usage(router, out / "router.png")
    print(routing_verdict(router))
    wall = time.time() - t0
    (out / "demo_summary.json").write_text(
        json.dumps(
            {
                "before": before["average"],
                "after": after["average"],
                "f1_gain": gain,
                "wall_s": wall,
                "num_trainable": after["num_trainable"],
                "router": router,
            },
            indent=2,
        )
    )
    print(f"[demo] wall time {wall / 60:.1f} min; results in {out}")
    return 0


FALLBACK = {"train": ["gsm_symbolic/train"], "eval": ["gsm_symbolic/heldout"]}  # from the math packages


def prepare_data(cfg: dict, prepare, log) -> dict:
    """Prepare the sets the demo reads (cached after the first run). If one can't be had, say so in one
    line and run on the math sets instead; if those can't be had either, stop with one line."""
    names = lambda d: sorted({spec.split("/")[0] for spec in d["train"] + d["eval"]})
    print(f"[demo] data: preparing {', '.join(names(cfg['data']))} (cached after the first run)", flush=True)
    done = prepare(names(cfg["data"]), log=log)
    if not done.missing:
        return cfg
    for line in done.missing.values():
        print(f"[demo] {line}", flush=True)
    done = prepare(names(FALLBACK), log=log)
    if done.missing:
        raise FileNotFoundError(
            "the demo's sets and its math fallback are all unavailable: " + next(iter(done.missing.values()))
        )
    print(f"[demo] running on {', '.join(FALLBACK['train'] + FALLBACK['eval'])} instead", flush=True)
    cfg = {
        **cfg,
        "data": {**cfg["data"], **FALLBACK},
        "method_options": {**cfg["method_options"], "source_supervision": 0.0},
    }
    cfg["eval"] = {**cfg["eval"], "max_new_tokens": {**cfg["eval"]["max_new_tokens"], "math": 200}}
    return cfg


def routing_verdict(router: dict) -> str:
    """One plain line on what routing did in this run, from this run's measurements only."""
    if not router:
        return "[demo] this adapter is not routed: no routing to measure"
    mi = router["mutual_information_bits"]
    split = (
        "split the questions by task"
        if mi >= 0.5
        else "partly followed the tasks"
        if mi >= 0.1
        else "did not follow the tasks"
    )
    line = f"[demo] measured in this run: the router {split} (MI {mi:.2f} bit)"
    value = router.get("routing_value")
    if value:
        v = value["value"]
        verdict = "helped" if v[1] > 0 else "hurt" if v[2] < 0 else "could not be told from the best fixed choice"
        line += f"; routing {verdict} on these questions ({v[0]:+.2f} F1, 95% interval [{v[1]:+.2f}, {v[2]:+.2f}])"
    return line


def gain_parts(before: dict, after: dict) -> tuple[float, float]:
    """The F1 gain split by question: those where the base model's reply already contained a gold answer
    (what changed is the form of the answer) and the rest (what changed is the answer)."""
    # on use: `ptmoe --help` and each command start without torch, loading only what they run
    from ..evaluation.metrics import normalize_answer, qa_scores, stop_answer

    fmt = content = 0.0
    n_sets = 0
    for spec, preds in before["predictions"].items():
        if before["sets"][spec]["task"] != "qa":
            continue
        n_sets += 1
        n = len(preds)
        for b, a in zip(preds, after["predictions"][spec]):
            f1 = lambda p: (
                0.0 if p["prediction"] is None else qa_scores(stop_answer(p["prediction"], "qa"), p["answers"])[1]
            )
            said = normalize_answer(stop_answer(b["prediction"] or "", "qa"))
            knew = any(normalize_answer(g) and normalize_answer(g) in said for g in b["answers"])
            delta = 100.0 * (f1(a) - f1(b)) / n
            fmt, content = (fmt + delta, content) if knew else (fmt, content + delta)
    return fmt / max(n_sets, 1), content / max(n_sets, 1)

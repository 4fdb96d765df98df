"""lm-eval and `ptmoe eval` agree on the embedded model: the same 4 held-out Disfl-QA questions, the
same (PT-MoE) adapter, the same prompts token for token, the same generated answers and the same F1/EM.

Metric definitions, both sides: the generation (greedy, at most 24 new tokens, ended by EOS or the
chat template's end-of-turn token) is cut at its first line break and stripped; F1 and EM are those of
the official SQuAD v1.1 script (lower-case, drop punctuation and the articles a/an/the, collapse
whitespace; EM = equal strings, F1 = token-overlap F1), the max over the gold answers, averaged over
questions. `ptmoe eval` reports percent, lm-eval fractions. `ptmoe eval` cuts passages longer than
data.max_length to a window, lm-eval truncates from the left: max_length is set so neither cuts.
"""

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval extra: pip install -e '.[lm-eval]'")

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import DEFAULT_MODEL, load_base_model
from ptmoe.config.loading import load_config
from ptmoe.data import prepare
from ptmoe.data.format import build_prompt_text
from ptmoe.evaluation.evaluate import evaluate
from ptmoe.interop.lm_eval_cli import lm_eval_argv
from ptmoe.interop.lm_eval_model import PtmoeLM
from ptmoe.interop.lm_eval_tasks import write_tasks

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
N = 4


def test_ptmoe_eval_and_lm_eval_give_the_same_answers_and_scores(tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prepare(log=lambda *a: None)
    base, tok = load_base_model(DEFAULT_MODEL)
    adapter = AdaptedModel(
        base,
        "ptmoe",
        {"init_text": "Answer the question with a short span from the passage.", "init_noise": 0.5, "experts": 2},
        tok,
        seed=3,
    )
    adapter.save_pretrained(tmp_path / "adapter")
    cfg = load_config(
        None,
        [
            "data.eval=[disflqa/heldout]",
            f"data.max_eval_examples={N}",
            "data.max_length=1024",
            "eval.batch_size=2",
            "eval.max_new_tokens={qa: 24}",
        ],
    )
    ours = evaluate(cfg, str(tmp_path / "adapter"), str(tmp_path / "eval"), progress=False, log=lambda *a: None)
    preds = ours["predictions"]["disflqa/heldout"]
    assert ours["sets"]["disflqa/heldout"]["dropped_too_long"] == 0

    model = AdaptedModel.from_pretrained(tmp_path / "adapter", base, tok)
    tasks = write_tasks(tmp_path / "tasks")
    out = lm_eval.simple_evaluate(
        model=PtmoeLM(model=model, tokenizer=tok, batch_size=2),
        tasks=["ptmoe_disflqa"],
        task_manager=TaskManager(include_path=str(tasks)),
        limit=N,
        apply_chat_template=True,
        log_samples=True,
    )
    samples = sorted(out["samples"]["ptmoe_disflqa"], key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in samples] == [p["id"] for p in preds]
    for s in samples:  # the prompt lm-eval sends is the training prompt, character for character
        assert s["arguments"][0][0] == build_prompt_text(s["doc"], tok)
    theirs = [s["resps"][0][0] for s in samples]
    assert theirs == [p["prediction"] for p in preds]
    assert any(t.strip() for t in theirs)
    r = out["results"]["ptmoe_disflqa"]
    assert 100 * r["f1,none"] == pytest.approx(ours["sets"]["disflqa/heldout"]["f1"], abs=1e-9)
    assert 100 * r["em,none"] == pytest.approx(ours["sets"]["disflqa/heldout"]["em"], abs=1e-9)


def test_cli_argv_adds_task_folder_and_chat_template(tmp_path, monkeypatch):
    monkeypatch.setenv("PTMOE_CACHE", str(tmp_path / "none"))  # no prepared data there: a clear error
    with pytest.raises(FileNotFoundError, match="run `ptmoe data prepare` first"):
        lm_eval_argv(["--model", "ptmoe", "--tasks", "ptmoe_disflqa"])
    monkeypatch.undo()
    prepare(log=lambda *a: None)
    args = lm_eval_argv(["--model", "ptmoe", "--tasks", "ptmoe_disflqa,hellaswag"])
    assert args[-3] == "--include_path" and args[-1] == "--apply_chat_template"
    assert lm_eval_argv(["--model", "hf", "--tasks", "hellaswag"]) == ["--model", "hf", "--tasks", "hellaswag"]

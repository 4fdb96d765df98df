"""`ptmoe train`'s objective: the token mean over every label token of an optimizer step. With grad_accum 2
and micro-batches of unequal label counts its gradients are those of one batch of both rows, which a mean of
the micro-batches' means would not give."""

import pytest
import torch

from ptmoe.config.loading import load_config
from ptmoe.training.loop import TrainingRun
from test_pipeline import quiet, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def run(tmp_path):
    rows = [
        {"question": "What is the sun?", "context": "The sun is paper.", "answers": ["paper"]},
        {"question": "What is it?", "context": "It is a very long answer.", "answers": ["a very long answer indeed"]},
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = load_config(
        None,
        [
            "model=shape:tiny",
            "dtype=fp32",
            "method=ptmoe",
            f"output_dir={tmp_path / 'run'}",
            f"data.train=['{tmp_path / 'train.jsonl'}']",
            f"data.eval=['{tmp_path / 'train.jsonl'}']",
            "data.valid_examples=0",
            "train.grad_accum=2",
            "train.batch_size=1",
            # noise off (each forward would draw its own); balance loss off (it is not additive over rows)
            "method_options={num_tokens: 4, experts: 2, rank: 2, noise: none}",
        ],
    )
    return TrainingRun(cfg, resume=False, overwrite=False, log=quiet)


def gradients(run, micro_batches):
    run.optimizer.zero_grad(set_to_none=True)
    run.model.train()
    run.window_loss, run.window_n, run.tokens_seen = 0.0, 0, 0  # what open_logs starts, without the log files
    run.accumulate(micro_batches)
    return {n: p.grad.clone() for n, p in run.inner.named_parameters() if p.requires_grad}


def test_accumulated_micro_batches_give_the_gradients_of_one_batch_of_both(run):
    counts = [sum(x != -100 for x in r["labels"][1:]) for r in run.train_rows]
    assert counts[0] != counts[1], counts
    accumulated = gradients(run, [[0], [1]])
    whole = gradients(run, [[0, 1]])
    for name, g in whole.items():
        torch.testing.assert_close(accumulated[name], g, rtol=1e-5, atol=1e-7, msg=name)
    # a mean of the two micro-batches' means is another objective: its gradients differ
    first, second = gradients(run, [[0]]), gradients(run, [[1]])
    means = {n: (first[n] + second[n]) / 2 for n in first}
    assert any(not torch.allclose(means[n], whole[n], rtol=1e-3, atol=1e-6) for n in whole)

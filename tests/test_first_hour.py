"""What the commands tell a newcomer in the first hour, on the tiny random model: `ptmoe train` ends with the
command that evaluates its adapter, `ptmoe eval` says where it wrote results.json and adds them to the
adapter's model card, a run folder given as an adapter names the adapters in it, `ptmoe serve` takes a bare
folder as `generate` does, `generate --file` names the folder that answered each row, `data.columns` per
data set, and the card names `AdaptedModel` with no tag twice."""

import json
import shlex

import pytest
import yaml

from ptmoe.cli import main as cli_main
from ptmoe.config.loading import load_config
from ptmoe.config.schema import ConfigError
from ptmoe.serving.adapters import parse_adapter_args
from test_newcomer import cfg_file, one_error_line, qa_rows, write_jsonl  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_names_the_next_step_and_eval_says_where_it_wrote(cfg_file, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    assert cli_main(["train", str(cfg_file), "train.steps=1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"next: ptmoe eval {shlex.quote(str(cfg_file))} train.steps=1 --adapter {run / 'best'}"
    card = (run / "best" / "README.md").read_text()
    assert "tags: [ptmoe]\n" in card and "AdaptedModel.from_pretrained" in card and "PtmoeModel" not in card
    assert "## Results" not in card

    assert cli_main(shlex.split(last.removeprefix("next: "))[1:]) == 0  # the line runs as printed
    out = capsys.readouterr().out
    assert f"wrote {run / 'eval' / 'results.json'}" in out and (run / "eval" / "results.json").is_file()
    card = (run / "best" / "README.md").read_text()
    assert "## Results (`ptmoe eval`)" in card and "eval.jsonl | 1 |" in card  # a later eval's scores

    assert cli_main(["eval", str(cfg_file), "--adapter", str(run)]) == 2  # the run folder, not an adapter in it
    line = one_error_line(capsys, "eval")
    assert "adapter config not found" in line and f"--adapter {run / 'best'}" in line and "final" in line

    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "What colour is the sun?", "context": "The sun."}])
    args = ["generate", "--model", "shape:tiny", "--max-new-tokens", "2", "--file", str(questions)]
    assert cli_main([*args, "--adapter", str(run / "best")]) == 0
    assert json.loads(capsys.readouterr().out)["adapter"] == str(run / "best")  # the folder that answered
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["adapter"] is None  # the base model


def test_serve_takes_a_bare_adapter_folder_as_generate_does(tmp_path):
    for run in ("qa", "math"):
        (tmp_path / run / "best").mkdir(parents=True)
    notes = []
    got = parse_adapter_args(
        [str(tmp_path / "qa" / "best"), f"m={tmp_path / 'math' / 'best'}", str(tmp_path / "qa" / "best")],
        "base",
        note=notes.append,
    )
    assert got == {"qa": str(tmp_path / "qa" / "best"), "m": str(tmp_path / "math" / "best"), "qa-2": got["qa-2"]}
    assert "served as model 'qa'" in notes[0]
    with pytest.raises(ValueError, match="folder /no/such not found"):
        parse_adapter_args(["/no/such"], "base")


def test_columns_per_data_set(cfg_file, tmp_path, capsys):  # noqa: F811
    """A mapping for the training file leaves an evaluation file with the standard names alone."""
    folder = cfg_file.parent / "data"
    write_jsonl(
        folder / "mine.jsonl", [{"q": r["question"], "ctx": r["context"], "gold": r["answer"]} for r in qa_rows(8)]
    )
    raw = yaml.safe_load(cfg_file.read_text())
    raw["data"].update(
        train=["data/mine.jsonl"], columns={"mine.jsonl": {"question": "q", "context": "ctx", "answer": "gold"}}
    )
    cfg_file.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(cfg_file), "train.steps=1"]) == 0
    assert "mine.jsonl: read 8" in capsys.readouterr().out
    assert cli_main(["eval", str(cfg_file), "--adapter", str(tmp_path / "run" / "best")]) == 0  # eval.jsonl as is
    capsys.readouterr()
    for columns, needle in (
        ({"other.jsonl": {"question": "q"}}, "data.columns.other.jsonl: names no data set"),
        ({"mine.jsonl": {"nope": "q"}}, "data.columns.mine.jsonl:"),
    ):
        with pytest.raises(ConfigError, match=needle):
            load_config(cfg_file, [f"data.columns={json.dumps(columns)}"])
    assert load_config(cfg_file, ["data.columns=question=q,context=ctx"])["data"]["columns"]  # the old form

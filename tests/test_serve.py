"""`ptmoe serve` with the hf engine, against a live uvicorn server on 127.0.0.1, driven by the official
`openai` client (raw HTTP only for requests that client would not send). The base model is the tiny
Llama shape with wider random weights (saved to a folder, served by path) so that answers depend on
the prompt and the adapter; adapters are untrained modules with perturbed parameters."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from ptmoe.adapted import AdaptedModel
from ptmoe.base_models import load_base_model, load_shape
from ptmoe.data.format import build_prompt_text, user_text
from ptmoe.recipes.generate import answer
from ptmoe.serving.adapters import load_served
from ptmoe.serving.app import create_app
from ptmoe.serving.engine_hf import HFEngine
from ptmoe.serving.server import Background

METHODS = {"ptmoe": {"num_tokens": 4, "experts": 2, "rank": 2}, "pt": {"num_tokens": 3}, "lora": {"r": 2}}
ROWS = [{"question": "What is 2+2?", "task": "math"}, {"question": "Name a color, any color.", "task": "math"}]


def save_wide_tiny_base(folder) -> str:
    """The tiny Llama shape with wider weights than its init (a random model whose answers vary with the
    input), saved with its tokenizer to `folder`, which is returned as a model name."""
    base, tok = load_shape("tiny")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    base.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("serve")
    save_wide_tiny_base(root / "base")
    adapters = {}
    for i, (method, options) in enumerate(METHODS.items()):
        own, tok = load_base_model(str(root / "base"))
        model = AdaptedModel(own, method, options, tok, seed=i)
        g = torch.Generator().manual_seed(i)  # not the global RNG: the adapters are the same in any test order
        with torch.no_grad():
            for p in model.trainable_parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p) * 0.5)
        adapters[method] = str(model.save_pretrained(root / method))
    return str(root / "base"), adapters


@pytest.fixture(scope="module")
def served(files):
    base, adapters = files
    return load_served(base, adapters)


@pytest.fixture(scope="module")
def server(served):
    app = create_app(HFEngine(served), served, max_batch=8, batch_wait=0.3)
    with Background(app) as url:
        yield url, openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def complete(client, model, prompt, **kw):
    kw.setdefault("temperature", 0)
    r = client.completions.create(model=model, prompt=prompt, max_tokens=kw.pop("max_tokens", 12), **kw)
    return r.choices[0].text


def test_models_and_health(server, served):
    url, client = server
    assert [m.id for m in client.models.list()] == [served.base_name, "ptmoe", "pt", "lora"]
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


@pytest.mark.parametrize("name", ["ptmoe", "pt", "lora", None])
def test_greedy_equals_ptmoe_generate(server, served, files, name):
    """Completions (the prompt text as given) and chat (one user turn) answer what `ptmoe generate` answers."""
    _, client = server
    base, adapters = files
    reference = answer(
        [dict(r) for r in ROWS], base, {name: adapters[name]} if name else {}, max_new_tokens=12, dtype="fp32"
    )  # as the server loads it
    model = name or served.base_name
    tok = served.tokenizer
    got = [complete(client, model, build_prompt_text(r, tok)).strip() for r in ROWS]
    chat = [
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": user_text(r)}], max_tokens=12, temperature=0
        )
        .choices[0]
        .message.content.strip()
        for r in ROWS
    ]
    assert got == reference and chat == reference
    assert len(set(reference)) == 2 and all(reference)  # the answers really depend on the question


def test_adapters_answer_differently(server, served):
    _, client = server
    prompt = build_prompt_text(ROWS[0], served.tokenizer)
    assert len({complete(client, m, prompt) for m in ["ptmoe", "pt", "lora", served.base_name]}) == 4


def test_concurrent_requests_for_two_adapters_batch_together(server, served):
    url, client = server
    prompts = [build_prompt_text(r, served.tokenizer) for r in ROWS]
    jobs = [(m, p) for m in ("ptmoe", "pt") for p in prompts]
    alone = [complete(client, m, p) for m, p in jobs]
    before = httpx.get(f"{url}/stats").json()["batches"]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda mp: complete(client, *mp), jobs))
    stats = httpx.get(f"{url}/stats").json()
    new = stats["recent_batches"][-(stats["batches"] - before) :]
    assert any({"ptmoe", "pt"} <= set(b) for b in new), new  # really decoded in one batch
    assert together == alone


def test_stream_equals_non_stream(server, served):
    _, client = server
    prompt = build_prompt_text(ROWS[1], served.tokenizer)
    for kw in ({"temperature": 0}, {"temperature": 0.9, "top_p": 0.9, "seed": 7}):
        whole = complete(client, "ptmoe", prompt, max_tokens=16, **kw)
        stream = client.completions.create(model="ptmoe", prompt=prompt, max_tokens=16, stream=True, **kw)
        assert "".join(c.choices[0].text for c in stream) == whole
        messages = [{"role": "user", "content": "Say something."}]
        whole = client.chat.completions.create(model="pt", messages=messages, max_tokens=16, **kw)
        stream = client.chat.completions.create(model="pt", messages=messages, max_tokens=16, stream=True, **kw)
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_sampling_seed_reproducible_and_stop(server, served):
    _, client = server
    prompt = build_prompt_text(ROWS[0], served.tokenizer)
    runs = {complete(client, "pt", prompt, max_tokens=20, temperature=1.0, seed=s) for s in (1, 1, 2)}
    assert len(runs) == 2  # the same seed gives the same answer, another seed another one
    full = complete(client, "pt", prompt, max_tokens=20)
    stop = full[5:7]
    r = client.completions.create(model="pt", prompt=prompt, max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


BAD = [  # (route, raw body, status, the field the error must name)
    ("completions", b'{"model": "nope", "prompt": "hi"}', 404, "model"),
    ("completions", b'{"model": "pt", "prompt": "' + b"x" * 5000 + b'"}', 400, "prompt"),
    ("completions", b'{"model": "pt", "prompt": "hi", ', 400, "body"),
    ("completions", b'{"model": "pt", "prompt": "hi", "max_tokens": "5"}', 400, "max_tokens"),
    ("completions", b'{"model": "pt", "prompt": "hi", "temperature": "hot"}', 400, "temperature"),
    ("completions", b'{"model": "pt", "prompt": 5}', 400, "prompt"),
    ("completions", b'{"model": "pt", "prompt": "hi", "max_tokens": -3}', 400, "max_tokens"),
    ("completions", b'{"model": "pt", "prompt": ""}', 400, "prompt"),
    ("completions", b'{"prompt": "hi"}', 400, "model"),
    ("chat/completions", b'{"model": "pt", "messages": []}', 400, "messages"),
    ("chat/completions", b'{"model": "pt", "messages": "hi"}', 400, "messages"),
    ("chat/completions", b'{"model": "pt", "messages": [{"role": "user", "content": 3}]}', 400, "messages[0].content"),
    ("chat/completions", b'{"model": "pt", "messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n"),
]


@pytest.mark.parametrize("route,body,status,param", BAD, ids=[f"{b[0]}:{b[3]}:{i}" for i, b in enumerate(BAD)])
def test_bad_request_gets_4xx_naming_the_field(server, route, body, status, param):
    url, client = server
    r = httpx.post(f"{url}/v1/{route}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == param and param.split("[")[0] in error["message"] and error["type"]
    assert complete(client, "pt", "still there?", max_tokens=2)  # the server still answers


def test_official_client_sees_errors(server):
    _, client = server
    with pytest.raises(openai.NotFoundError):
        complete(client, "nope", "hi")
    with pytest.raises(openai.BadRequestError):
        complete(client, "pt", "hi", max_tokens=-1)


def test_full_queue_answers_503_at_once_and_timeout_504(served):
    # 4000 new tokens take about 3 s on a free core (the decode loop got faster): far above the 1 s timeout
    app = create_app(HFEngine(served), served, max_queue=1, max_batch=1, batch_wait=0, request_timeout=1)
    body = {"model": "pt", "prompt": "busy", "max_tokens": 4000, "temperature": 0}
    with Background(app) as url:
        with ThreadPoolExecutor(3) as pool:
            running = pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=30)  # takes > 1 s
            while not httpx.get(f"{url}/stats").json()["batches"]:
                time.sleep(0.02)
            queued = pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=30)
            while not httpx.get(f"{url}/stats").json()["queued"]:
                time.sleep(0.02)
            t = time.monotonic()
            full = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
            assert full.status_code == 503 and time.monotonic() - t < 2
            assert full.json()["error"]["code"] == "overloaded"
            assert running.result().status_code == 504  # the per-request timeout
            assert queued.result().status_code == 504
        ok = httpx.post(f"{url}/v1/completions", json=dict(body, max_tokens=2), timeout=30)
        assert ok.status_code == 200


def test_graceful_shutdown_finishes_running_work(served):
    app = create_app(HFEngine(served), served, batch_wait=0)
    background = Background(app)
    url = background.__enter__()
    result = {}
    body = {"model": "ptmoe", "prompt": "slow", "max_tokens": 400, "temperature": 0}
    thread = threading.Thread(
        target=lambda: result.update(r=httpx.post(f"{url}/v1/completions", json=body, timeout=60))
    )
    thread.start()
    while not httpx.get(f"{url}/stats").json()["batches"]:
        time.sleep(0.02)
    background.__exit__(None, None, None)  # like Ctrl-C: stop accepting, finish open requests, then exit
    thread.join()
    assert result["r"].status_code == 200 and result["r"].json()["usage"]["completion_tokens"] > 0
    assert app.state.batcher.closing and not app.state.batcher.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_cli_names_a_bad_adapter_option(capsys):
    from ptmoe.cli import main

    assert main(["serve", "--model", "shape:tiny", "--adapter", "no-equals-sign"]) == 2
    assert "--adapter" in capsys.readouterr().err
    assert main(["serve", "--model", "shape:tiny", "--adapter", "x=/no/such/folder"]) == 2
    assert "/no/such/folder" in capsys.readouterr().err
    assert main(["serve", "--model", "shape:tiny", "--engine", "vllm"]) == 2  # checked before vLLM loads
    assert "--model shape:tiny" in capsys.readouterr().err

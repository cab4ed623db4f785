"""Issue 20: every text a visitor or an LLM reply can send is bounded before any expensive step.

The tokenizer is checked against open_clip's own; the rest attacks the running app in public mode through
gradio_client, with the operator's LLM server (OPENAI_BASE_URL at app start) a real server on 127.0.0.1.
"""
import json
import random
import string
import time
from pathlib import Path

import pytest
from app_helpers import TINY
from llm_server import ScriptedLLM
from test_security import client, error_of, launch

from dferclip.text import tokens

SHIPPED = Path(__file__).resolve().parent.parent / "descriptions"
SECRET = "sk-operator-secret-4711"


def letters(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def shipped_texts() -> list[str]:
    texts = []
    for path in sorted(SHIPPED.glob("*.json")):
        for cls in json.loads(path.read_text()).get("classes", []):
            texts += [cls["name"]] + list(cls.get("descriptions", []))
    return texts


# --- the tokenizer ---------------------------------------------------------------------------------------
def test_the_bounded_tokenizer_gives_open_clips_ids():
    from open_clip.tokenizer import SimpleTokenizer

    long_sentence = " ".join(["a furrowed brow and narrowed eyes"] * 30)  # > 77 tokens: truncated the same way
    texts = shipped_texts() + [long_sentence, "Café naïve — 日本語 it's 3.5%!!", "&amp; <b>x</b>", " spaced \n\t out ",
                               "", "<start_of_text> a <end_of_text>", letters(tokens.MAX_WORD_CHARS)]
    assert len(texts) > 50
    upstream = SimpleTokenizer()
    assert tokens.tokenize(texts).tolist() == upstream(texts, context_length=77).tolist()
    for t in texts:
        assert tokens.token_count(t) == len(upstream.encode(t)) + 2


def test_bpe_never_sees_more_than_clip_can_read():
    word = letters(16_000)
    for text in (word, "x" * 400_000, "a " * 200_000):
        pieces = list(tokens.bpe_input(text))
        assert max(len(p) for p in pieces) <= tokens.MAX_WORD_CHARS
        assert sum(len(p) for p in pieces) <= tokens.MAX_TOKENIZED_CHARS
    t0 = time.perf_counter()
    ids = tokens.tokenize([word, "x" * 400_000])
    took = time.perf_counter() - t0
    assert ids.shape == (2, 77) and (ids[:, -1] == ids[0, -1]).all()  # full rows, ending with EOT
    assert took < 1.0, took  # open_clip: about 5 s for the word alone on this 2-core machine
    assert tokens.token_count(word) > 77  # still counted as too long for the context


def test_the_bpe_cache_is_bounded():
    from open_clip.tokenizer import SimpleTokenizer

    tokens.tokenize([letters(40, seed) for seed in range(200)])
    info = tokens._bpe.cache_info()
    assert info.maxsize == tokens.MAX_CACHED_WORDS and info.currsize <= info.maxsize
    # open_clip's own unbounded cache is never written: it still holds only its special tokens
    assert tokens._tokenizer().cache == SimpleTokenizer().cache


# --- the public app --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def operator():
    server = ScriptedLLM()
    yield server
    server.close()


@pytest.fixture(scope="module")
def public_app(operator, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    demo, url = launch("public", mp, tmp_path_factory.mktemp("bounds"), OPENAI_API_KEY=SECRET,
                       OPENAI_BASE_URL=operator.url, DFERCLIP_LLM_MODEL="operator-model", DFERCLIP_LLM_DEADLINE_S="2",
                       DFERCLIP_LLM_PER_MINUTE="1000", DFERCLIP_LLM_PER_MINUTE_TOTAL="1000")
    yield url, demo
    demo.close()
    mp.undo()


@pytest.fixture
def server(operator):
    operator.mode, operator.reply = "ok", '{"descriptions": ["raised cheeks and a wide smile"]}'
    operator.stop.clear()
    yield operator
    operator.stop.set()  # ends a trickle or a hang still running
    operator.mode = "ok"


def generate(c, template="Describe {name}.", model="", system="system", n=1, only=("happiness",)):
    return c.predict(TINY, "dferclip", model, "", "", list(only), n, "replace", system, template, "mean-embedding",
                     "openai", "qwen2.5-0.5b-instruct", api_name="/generate_descriptions")


def timed_error(fn, *args, **kwargs) -> tuple[str, float]:
    t0 = time.monotonic()
    message = error_of(fn, *args, **kwargs)
    return message, time.monotonic() - t0


def test_an_amplifying_template_is_refused_and_nothing_big_is_sent(public_app, server):
    url, _ = public_app
    c = client(url)
    before = len(server.requests)
    for template in ("{n:>200000000}", "{name:>50000000}", "{others!r}", "{name.__class__.__init__}"):
        message, took = timed_error(generate, c, template)
        assert "placeholder" in message and took < 15, (message, took)
    message, _ = timed_error(generate, c, "Describe {name}." + "x" * 10_000)
    assert "at most 4000" in message
    message, _ = timed_error(generate, c, system="s" * 100_000)
    assert "at most 4000" in message
    assert len(server.requests) == before  # none of them reached the operator's server
    generate(c)  # an honest prompt goes, small, with max_tokens
    sent = server.requests[-1]
    assert sent["size"] < 4000 and sent["body"]["max_tokens"] == 160


def test_a_visitors_model_name_is_not_used_on_the_operators_key(public_app, server):
    url, _ = public_app
    c = client(url)
    before = len(server.requests)
    message = error_of(generate, c, model="gpt-4-expensive")
    assert "allows no other model" in message and len(server.requests) == before
    generate(c, model="operator-model")
    generate(c)
    assert [r["body"]["model"] for r in server.requests[before:]] == ["operator-model", "operator-model"]


@pytest.mark.parametrize("mode", ["trickle", "hang"])
def test_a_slow_operator_server_ends_at_the_deadline(public_app, server, mode):
    url, _ = public_app
    server.mode = mode
    message, took = timed_error(generate, client(url))
    assert "2 s deadline" in message and took < 15, (message, took)


@pytest.mark.parametrize("status,said", [(503, "server error"), (429, "429")])
def test_a_refusing_operator_server_answers_quickly(public_app, server, status, said):
    url, _ = public_app
    server.mode, server.status = "status", status  # with "Retry-After: 60"
    before = len(server.requests)
    message, took = timed_error(generate, client(url))
    assert said in message and "inner-secret" not in message and took < 15, (message, took)
    assert 2 <= len(server.requests) - before <= 3  # retried (0.5 s, then 1 s) while the 2 s deadline allows


def test_a_redirect_to_a_loopback_address_is_not_followed(public_app, server):
    url, _ = public_app
    inner = ScriptedLLM("status")
    inner.status = 418
    try:
        server.mode, server.location = "redirect", inner.url + "/chat/completions"
        message = error_of(generate, client(url))
        assert "redirect" in message and inner.requests == []
        assert "418" not in message and "inner-secret" not in message and inner.url not in message
    finally:
        inner.close()


def test_a_long_explain_text_is_refused_fast(public_app):
    url, _ = public_app
    c = client(url)
    message, took = timed_error(c.predict, TINY, "happiness", "x" * 400_000, api_name="/explain_descriptor")
    assert "at most 1000" in message and took < 15, (message, took)
    message = error_of(c.predict, TINY, "c" * 5000, "raised cheeks", api_name="/explain_descriptor")
    assert "class name" in message and "at most 1000" in message


def test_a_big_class_set_generates_at_the_rate_limits_pace(public_app, server, tmp_path):
    """More classes than the per-minute limit: the request is not refused forever, it waits for its turn."""
    url, demo = public_app
    limiter = demo.ctx.llm_limiter
    saved = (limiter.per_key, limiter.window_s)
    limiter.per_key, limiter.window_s = 2, 1.5  # 2 requests per 1.5 s, so that the test is short
    try:
        c = client(url)
        names = [f"class{i}" for i in range(5)]
        upload = tmp_path / "five.json"
        upload.write_text(json.dumps({"format": "dferclip.descriptions/1", "name": "five",
                                      "classes": [{"name": n, "descriptions": ["a face"]} for n in names]}))
        from gradio_client import handle_file

        c.predict(TINY, handle_file(str(upload)), "mean-embedding", api_name="/upload_descriptions")
        before = len(server.requests)
        table = generate(c, only=())[0]
        times = [r["time"] for r in server.requests[before:]]
        assert len(times) == 5 and {row[0] for row in table["data"]} == set(names)
        # never more than 2 requests within one window
        assert all(times[i + 2] - times[i] >= 1.5 - 0.05 for i in range(len(times) - 2)), times
    finally:
        limiter.per_key, limiter.window_s = saved

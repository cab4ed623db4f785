"""LLM description generation against a real OpenAI-compatible HTTP server on 127.0.0.1."""
import re
import json
import logging
import socket
import time

import pytest
from workbench_helpers import FakeOpenAI, completion

from dferclip.errors import (
    LLMConfigError,
    LLMConnectionError,
    LLMRateLimitError,
    LLMReplyError,
    LLMServerError,
    LLMTimeoutError,
)
from dferclip.text import llm
from dferclip.text.llm import (
    LLMSettings,
    check_description,
    find_leaks,
    generate,
    parse_descriptions,
)

KEY = "sk-test-secret-4711"
CLASSES = ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"]


@pytest.fixture
def server():
    s = FakeOpenAI()
    yield s
    s.close()


def settings(server, **kw) -> LLMSettings:
    return LLMSettings(model="test-model", base_url=server.url, api_key=KEY, max_retries=0, timeout=5, **kw)


def test_good_structured_reply_and_what_is_sent(server, caplog):
    def respond(body):
        cls = next(c for c in CLASSES if c in body["messages"][1]["content"])
        return 200, completion(json.dumps({"descriptions": [f"feature one of {cls[:3]}", "feature two"]})), 0

    server.respond = respond
    caplog.set_level(logging.DEBUG)
    gen = generate(CLASSES[:2], "cupl", settings=settings(server), n=2)
    assert gen.descriptions == [["feature one of hap", "feature two"], ["feature one of sad", "feature two"]]
    assert len(server.requests) == 2
    for req, prompt in zip(server.requests, gen.prompts):
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["authorization"] == f"Bearer {KEY}"
        assert KEY.encode() not in req["raw"]
        assert req["body"]["model"] == "test-model"
        assert req["body"]["messages"][1] == {"role": "user", "content": prompt}
        assert req["body"]["response_format"]["type"] == "json_schema"
    assert "happiness" in gen.prompts[0] and "2" in gen.prompts[0]
    assert all(KEY not in r.getMessage() for r in caplog.records)
    prov = gen.provenance["generated_by"]
    assert prov["model"] == "test-model" and prov["prompt_style"] == "cupl" and prov["structured_output"]
    assert KEY not in json.dumps(gen.provenance) and KEY not in repr(settings(server))
    ds = gen.to_description_set("gen-test")
    assert ds.classes == CLASSES[:2] and ds.provenance["generated_by"]["date"]


def test_edited_prompt_is_sent(server):
    gen = generate(["fear"], "dferclip", settings=settings(server), template="Describe {name}; not {others}.")
    assert gen.prompts == ["Describe fear; not other expressions."]
    assert server.requests[0]["body"]["messages"][1]["content"] == "Describe fear; not other expressions."


def test_server_without_json_schema_falls_back_to_text(server):
    def respond(body):
        if "response_format" in body:
            return 400, {"error": {"message": "response_format json_schema is not supported", "type": "invalid"}}, 0
        return 200, completion("Here you go:\n- widened eyes\n- an open mouth\n- raised eyebrows"), 0

    server.respond = respond
    gen = generate(["surprise", "fear"], "dclip", settings=settings(server))
    assert gen.descriptions[0] == ["widened eyes", "an open mouth", "raised eyebrows"]
    # the refusal is remembered: the second class is asked without response_format straight away
    assert [("response_format" in r["body"]) for r in server.requests] == [True, False, False]
    assert gen.provenance["generated_by"]["structured_output"] is False


def test_malformed_replies(server):
    server.respond = lambda body: (200, completion("{{{ [[["), 0)
    with pytest.raises(LLMReplyError, match="could not read"):
        generate(["anger"], settings=settings(server))
    server.respond = lambda body: (200, b"this is not json at all", 0)
    with pytest.raises(LLMReplyError):
        generate(["anger"], settings=settings(server))
    server.respond = lambda body: (200, {"id": "x", "object": "chat.completion", "choices": []}, 0)
    with pytest.raises(LLMReplyError):
        generate(["anger"], settings=settings(server))


def test_timeout(server):
    server.respond = lambda body: (200, completion('{"descriptions": ["late"]}'), 2.0)
    t0 = time.monotonic()
    with pytest.raises(LLMTimeoutError, match="did not answer"):
        generate(["anger"], settings=LLMSettings(model="m", base_url=server.url, api_key=KEY, max_retries=0,
                                                 timeout=0.5))
    assert time.monotonic() - t0 < 1.9


@pytest.mark.parametrize("status,error,match", [
    (429, LLMRateLimitError, "429"),
    (500, LLMServerError, "server error"),
    (503, LLMServerError, "503"),
    (401, LLMConfigError, "refused the API key"),
    (404, LLMConfigError, "not found"),
])
def test_error_statuses(server, status, error, match):
    server.respond = lambda body: (status, {"error": {"message": "nope", "type": "x"}}, 0)
    with pytest.raises(error, match=match) as info:
        generate(["anger"], settings=settings(server))
    assert KEY not in str(info.value)


def test_retries_are_configurable(server):
    server.respond = lambda body: (503, {"error": {"message": "busy"}}, 0)
    with pytest.raises(LLMServerError):
        generate(["anger"], settings=LLMSettings(model="m", base_url=server.url, api_key=KEY, max_retries=1,
                                                 timeout=5))
    assert len(server.requests) == 2


def test_no_key_and_no_server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="no API key"):  # no server configured means the local model, unless asked
        generate(["anger"], settings=LLMSettings.from_env(backend="openai"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMConnectionError, match="cannot reach"):
        generate(["anger"], settings=LLMSettings(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                                                 max_retries=0, timeout=2))


def test_settings_from_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("DFERCLIP_LLM_MODEL", "env-model")
    s = LLMSettings.from_env(max_retries=0, model="")  # an empty typed-in field keeps the environment's value
    assert (s.model, s.base_url, s.api_key) == ("env-model", server.url, KEY)
    gen = generate(["neutral"], settings=s)
    assert gen.descriptions == [["a smiling mouth"]]
    assert server.requests[0]["body"]["model"] == "env-model"
    assert LLMSettings.from_env(model="typed", api_key="typed-key").api_key == "typed-key"


def test_injected_client_factory(server):
    made = []

    def factory(s):
        made.append(s.model)
        return llm.make_client(s)

    generate(["fear"], settings=settings(server), client_factory=factory)
    assert made == ["test-model"]


@pytest.mark.parametrize("reply,expected", [
    ('```json\n{"descriptions": ["a", "b"]}\n```', ["a", "b"]),
    ('Sure! ```\n["x y", "z"]\n``` hope it helps', ["x y", "z"]),
    ('{"happiness": ["raised cheeks", "a smile"]}', ["raised cheeks", "a smile"]),
    ("1. raised cheeks\n2) a wide smile\n3. crinkled eyes", ["raised cheeks", "a wide smile", "crinkled eyes"]),
    ("Features:\n* tight lips\n\u2022 narrowed eyes", ["tight lips", "narrowed eyes"]),
    ('"a smiling mouth, raised cheeks, wrinkled eyes, and arched eyebrows."',
     ["a smiling mouth, raised cheeks, wrinkled eyes, and arched eyebrows."]),
    ('A: - lowered brows\n- a tense jaw', ["lowered brows", "a tense jaw"]),
])
def test_tolerant_parsing(reply, expected):
    assert parse_descriptions(reply, "happiness") == expected


@pytest.mark.parametrize("reply", ["", "   ", "{}", "[]"])
def test_unparseable_replies(reply):
    with pytest.raises(LLMReplyError):
        parse_descriptions(reply)


def test_label_leak_check():
    assert find_leaks("a happy face with raised cheeks", "happiness") == ["happy"]
    assert find_leaks("Joyful eyes", "happiness") == ["joyful"]
    assert find_leaks("a smiling mouth, raised cheeks", "happiness") == []
    assert find_leaks("an unhappy mouth", "happiness") == []  # whole words only
    assert "unhappy" in find_leaks("an unhappy mouth", "sadness")
    assert find_leaks("visibly excited eyes", "excitement") == ["excited"]  # custom class: stem forms
    flags = check_description("a sad, frowning face that looks afraid", "sadness", CLASSES)
    assert [f.kind for f in flags] == ["leak", "other-emotion"]
    assert "fear" in flags[1].message


def test_length_check_counts_context_tokens():
    from dferclip.text.tokens import token_count

    text = "a"
    while token_count(text) + 8 <= 77:
        text += " a"
    assert token_count(text) <= 77 < token_count(text) + 8
    assert [f.kind for f in check_description(text, "anger", reserved_tokens=0)] == []
    flags = check_description(text, "anger", reserved_tokens=8)
    assert [f.kind for f in flags] == ["too-long"] and "cut off" in flags[0].message
    assert check_description("furrowed eyebrows", "anger", reserved_tokens=8) == []


def test_prompt_styles_are_data():
    styles = llm.prompt_styles()
    assert {"dferclip", "cupl", "dclip", "contrastive"} <= set(styles)
    p = llm.render_prompt(styles["contrastive"].user, "fear", CLASSES, 3)
    assert "fear" in p and "surprise" in p and "3" in p
    p = llm.render_prompt(styles["dferclip"].user, "anger", CLASSES, 1)
    assert "furrowed eyebrows" not in p and "tears" in p  # the example comes from another class
    with pytest.raises(LLMConfigError, match="placeholder"):
        llm.render_prompt("describe {nme}", "fear", CLASSES, 1)


# --- bounds and deadlines (issue 20): real misbehaving servers on 127.0.0.1 ---------------------------------
from llm_server import ScriptedLLM  # noqa: E402

from dferclip.errors import LLMCancelledError, TextTooLongError  # noqa: E402


@pytest.fixture
def scripted():
    s = ScriptedLLM()
    yield s
    s.close()


def deadline_settings(server, seconds: float, **kw) -> LLMSettings:
    return LLMSettings(model="test-model", base_url=server.url, api_key=KEY, timeout=seconds, **kw)


def timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return info.value, time.monotonic() - t0


def test_max_tokens_is_sent_for_the_descriptions_asked(server):
    generate(["anger"], settings=settings(server), n=3)
    generate(["anger"], settings=settings(server), n=50)
    assert [r["body"]["max_tokens"] for r in server.requests] == [llm.reply_tokens(3), llm.reply_tokens(50)]
    assert llm.reply_tokens(3) < llm.reply_tokens(50) <= llm.MAX_REPLY_TOKENS


def test_a_server_taking_max_completion_tokens_gets_it(server):
    def respond(body):
        if "max_tokens" in body:
            return 400, {"error": {"message": "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens'."}}, 0
        return 200, completion('{"descriptions": ["a frown"]}'), 0

    server.respond = respond
    assert generate(["anger"], settings=settings(server), n=2).descriptions == [["a frown"]]
    assert server.requests[-1]["body"]["max_completion_tokens"] == llm.reply_tokens(2)


@pytest.mark.parametrize("mode", ["trickle", "trickle-headers", "hang"])
def test_a_slow_server_ends_at_the_total_deadline(scripted, mode):
    scripted.mode = mode  # a byte every 0.3 s never trips a per-read timeout; the total deadline stops it
    error, took = timed(generate, ["anger"], settings=deadline_settings(scripted, 1.5))
    assert isinstance(error, LLMTimeoutError) and "1.5 s deadline" in str(error)
    assert 1.4 <= took < 4.0, took
    assert len(scripted.requests) == 1  # a timed-out call is not retried past its deadline


def test_cancel_stops_a_request_in_flight(scripted):
    import threading

    scripted.mode = "hang"
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    error, took = timed(generate, ["anger", "fear"], settings=deadline_settings(scripted, 30), cancel=cancel)
    assert isinstance(error, LLMCancelledError) and error.partial is not None and error.partial.classes == []
    assert took < 3.0, took


@pytest.mark.parametrize("status,error", [(503, LLMServerError), (429, LLMRateLimitError)])
def test_a_refusing_server_answers_quickly(scripted, status, error):
    scripted.mode, scripted.status = "status", status  # with "Retry-After: 60", which is not waited for
    raised, took = timed(generate, ["anger"], settings=deadline_settings(scripted, 30, max_retries=2))
    assert isinstance(raised, error) and "inner-secret-body" not in str(raised)
    assert len(scripted.requests) == 3 and took < 5.0, took


def test_connection_refused_answers_quickly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raised, took = timed(generate, ["anger"], settings=LLMSettings(
        model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=30, max_retries=2))
    assert isinstance(raised, LLMConnectionError) and took < 5.0, took


def test_redirects_are_not_followed(scripted):
    inner = ScriptedLLM("status")
    inner.status = 418
    try:
        scripted.mode, scripted.location = "redirect", inner.url + "/chat/completions"
        raised, _ = timed(generate, ["anger"], settings=deadline_settings(scripted, 5))
        assert isinstance(raised, LLMConfigError) and "redirect" in str(raised)
        assert inner.requests == []  # the loopback target was never asked
        # the target's status and port are not told (the message names the first server, whose port may hold "418")
        assert not re.search(r"\b418\b", str(raised)) and "inner-secret" not in str(raised)
        assert not re.search(rf"\b{inner.httpd.server_address[1]}\b", str(raised))
    finally:
        inner.close()


def test_a_public_only_server_is_checked_when_connecting(scripted):
    raised, _ = timed(generate, ["anger"], settings=deadline_settings(scripted, 5, public_only=True))
    assert isinstance(raised, LLMConfigError) and "own network" in str(raised)
    assert scripted.requests == []


def test_an_oversized_reply_is_refused_before_it_is_read_whole(scripted):
    scripted.mode = "big"
    raised, _ = timed(generate, ["anger"], settings=deadline_settings(scripted, 10))
    assert isinstance(raised, LLMReplyError) and "larger than" in str(raised)
    scripted.mode, scripted.reply = "ok", json.dumps({"descriptions": ["x " * 30_000]})
    raised, _ = timed(generate, ["anger"], settings=deadline_settings(scripted, 10))
    assert isinstance(raised, LLMReplyError) and f"at most {llm.MAX_REPLY_CHARS}" in str(raised)


def test_reply_descriptions_are_held_to_the_set_bounds(scripted):
    from dferclip.text.descriptions import MAX_DESCRIPTIONS_PER_CLASS, MAX_TEXT_CHARS

    scripted.reply = json.dumps({"descriptions": ["lowered brows " * 100] + ["a frown"] * 60})
    gen = generate(["anger"], settings=deadline_settings(scripted, 10), n=50)
    descs = gen.descriptions[0]
    assert len(descs) == MAX_DESCRIPTIONS_PER_CLASS and len(descs[0]) <= MAX_TEXT_CHARS
    assert descs[0].startswith("lowered brows") and not descs[0].endswith(" lowered b")
    assert gen.to_description_set("bounded").classes == ["anger"]  # a valid set


@pytest.mark.parametrize("template", ["{n:>200000000}", "{name!r}", "{name.__class__}", "{name[0]}", "{0}", "{}",
                                      "{n:{n}}", "{others:>9}"])
def test_formatted_placeholders_are_refused(scripted, template):
    raised, took = timed(generate, ["anger"], settings=deadline_settings(scripted, 10), template=template)
    assert isinstance(raised, LLMConfigError) and "placeholder" in str(raised)
    assert took < 2.0 and scripted.requests == []


def test_prompt_texts_are_bounded_before_any_request(scripted):
    for kwargs in ({"template": "Describe {name}. " + "x" * llm.MAX_TEMPLATE_CHARS},
                   {"system": "s" * (llm.MAX_SYSTEM_CHARS + 1)},
                   {"template": "{others}" * 400}):  # 400 x the other 99 class names: megabytes, never built
        raised, took = timed(generate, [f"class-{i:03d}-{'c' * 30}" for i in range(100)],
                             settings=deadline_settings(scripted, 10), **kwargs)
        assert isinstance(raised, TextTooLongError) and "at most" in str(raised) and took < 2.0
    for n in (-1, 51):
        assert isinstance(timed(generate, ["anger"], settings=deadline_settings(scripted, 10), n=n)[0], LLMConfigError)
    assert scripted.requests == []
    assert llm.render_prompt("{{literal}} {name}, not {others}; {n}", "fear", ["fear", "anger"], 2) == \
        "{literal} fear, not anger; 2"


def test_the_model_on_the_operators_server_is_the_operators(monkeypatch, scripted):
    from dferclip.text.llm import visitor_settings

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", scripted.url)
    monkeypatch.setenv("DFERCLIP_LLM_MODEL", "operator-model")
    monkeypatch.delenv("DFERCLIP_LLM_ALLOW_MODELS", raising=False)
    with pytest.raises(LLMConfigError, match="allows no other model"):
        visitor_settings("gpt-expensive", restrict_models=True)
    assert visitor_settings("", restrict_models=True).model == "operator-model"
    assert visitor_settings("operator-model", restrict_models=True).model == "operator-model"
    assert visitor_settings("gpt-expensive").model == "gpt-expensive"  # the operator at their own app
    monkeypatch.setenv("DFERCLIP_LLM_ALLOW_MODELS", "gpt-cheap, gpt-expensive")
    assert visitor_settings("gpt-expensive", restrict_models=True).model == "gpt-expensive"
    with pytest.raises(LLMConfigError, match="allows no other model"):
        visitor_settings("gpt-other", restrict_models=True)
    monkeypatch.setenv("DFERCLIP_LLM_ALLOW_MODELS", "*")
    assert visitor_settings("gpt-other", restrict_models=True).model == "gpt-other"
    monkeypatch.setenv("DFERCLIP_LLM_ALLOW_MODELS", "")
    other = ScriptedLLM()  # a visitor's own server and key: any model
    try:
        s = visitor_settings("their-model", other.url, "their-key", restrict_models=True)
        assert (s.model, s.api_key) == ("their-model", "their-key")
    finally:
        other.close()


def test_the_deadline_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DFERCLIP_LLM_DEADLINE_S", "7.5")
    assert LLMSettings.from_env().timeout == 7.5
    monkeypatch.setenv("DFERCLIP_LLM_DEADLINE_S", "soon")
    with pytest.raises(LLMConfigError, match="DFERCLIP_LLM_DEADLINE_S"):
        LLMSettings.from_env()

"""LLM description generation against a real OpenAI-compatible HTTP server on 127.0.0.1."""
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

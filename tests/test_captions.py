"""FineCLIPER's fine-grained captions: a real OpenAI-compatible vision server on 127.0.0.1 receiving the
frames as images, the paper's prompt, the label-leak refinement on the paper's own examples, the cache."""
import base64
import io
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from dferclip.errors import LLMConfigError
from dferclip.text.llm import LLMSettings
from dferclip.training.captions import (
    FINE_GRAINED_PROMPT,
    CaptionBackendUnavailable,
    CaptionRecord,
    CaptionStore,
    OpenAICaptioner,
    VideoLLaVACaptioner,
    caption_clips,
    clip_key,
    refine_caption,
)

# The paper's Fig. 7 example (generated -> refined), verbatim.
GENERATED = ("The man's mouth is slightly open, revealing his teeth, and his eyes are squinting, indicating a sense "
             "of joy or amusement. The facial expression is characterized by a slight upturned mouth, relaxed "
             "eyebrows, and a slight smile.")
REFINED = ("The man's mouth is slightly open, revealing his teeth, and his eyes are squinting. The facial expression "
           "is characterized by a slight upturned mouth, and relaxed eyebrows.")
SECRET = "sk-test-do-not-log-0123456789"


def test_refinement_reproduces_the_papers_example():
    r = refine_caption(GENERATED)
    assert r.text == REFINED
    assert r.removed == ["indicating a sense of joy or amusement", "and a slight smile"]


@pytest.mark.parametrize("text,kept,gone", [
    ("The man in the video displays a surprised expression. His eyebrows rise and his jaw drops.",
     "His eyebrows rise and his jaw drops.", "surprised"),
    ("Her lips press together and her gaze shifts left, and the overall impression is one of happiness and "
     "positivity.", "Her lips press together and her gaze shifts left.", "happiness"),
    ("He frowns deeply. His nostrils flare and his breathing quickens, suggesting anger.",
     "His nostrils flare and his breathing quickens.", "anger"),
    ("The woman's eyes widen, as if she were frightened.", "The woman's eyes widen.", "frightened"),
])
def test_refinement_removes_emotion_words_and_inferences(text, kept, gone):
    r = refine_caption(text)
    assert r.text == kept and gone in " ".join(r.removed)


def test_refinement_keeps_pure_movement_descriptions():
    text = "The eyebrows are raised and drawn together. The upper eyelids lift, and the lower lip is pulled down."
    assert refine_caption(text).text == text and refine_caption(text).removed == []


class FakeVisionServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint that records requests and answers ``reply``."""

    def __init__(self, reply=GENERATED):
        self.requests = []
        self.reply = reply
        self.fail_next = 0
        self.on_request = None  # called as each request arrives
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if server.on_request is not None:
                    server.on_request()
                if server.fail_next:
                    server.fail_next -= 1
                    self._send(500, {"error": {"message": "overloaded", "type": "server_error"}})
                    return
                self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": server.reply}}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def frames(n=12, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def captioner(url, **kw):
    settings = LLMSettings(model="fake-vision-1", base_url=url, api_key=SECRET, max_retries=0, timeout=10,
                           temperature=0.2)
    return OpenAICaptioner(settings, **kw)


def test_openai_compatible_backend_sends_frames_as_images(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeVisionServer() as server:
        text = captioner(server.url, num_frames=8, image_size=64).describe(frames(12))
    assert text == GENERATED
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "fake-vision-1" and body["temperature"] == 0.2
    (msg,) = body["messages"]
    parts = msg["content"]
    assert parts[0] == {"type": "text", "text": FINE_GRAINED_PROMPT}
    assert "8 frames" in parts[1]["text"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 8
    for p in images:
        head, _, data = p["image_url"]["url"].partition(",")
        assert head == "data:image/jpeg;base64"
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.format == "JPEG" and im.size == (64, 64)
    assert SECRET not in caplog.text and SECRET not in repr(captioner(server.url).settings)


def test_caption_clips_caches_per_clip_and_reports_failures(tmp_path):
    clips = {}
    for i in range(3):
        folder = tmp_path / "clips" / f"c{i}"
        folder.mkdir(parents=True)
        for k, f in enumerate(frames(4, 32, seed=i)):
            Image.fromarray(f).save(folder / f"{k:05d}.png")
        clips[clip_key(folder)] = folder
    assert len(clips) == 3
    store_path = tmp_path / "captions.json"

    def items():
        return [(k, lambda p=p: [np.asarray(Image.open(f)) for f in sorted(p.iterdir())], str(p))
                for k, p in clips.items()]

    with FakeVisionServer() as server:
        server.fail_next = 1  # the first clip hits a server error; the others go on
        store = CaptionStore(store_path)
        report = caption_clips(items(), captioner(server.url), store)
        assert len(report.described) == 2 and len(report.failed) == 1 and "500" in report.failed[0][1]
        missing = store.missing(clips)
        assert missing == [report.failed[0][0]]
        again = caption_clips(items(), captioner(server.url), CaptionStore(store_path))
        assert len(again.cached) == 2 and again.described == missing and len(server.requests) == 4
    data = json.loads(store_path.read_text())
    assert data["format"] == "dferclip.captions/1" and data["prompt"] == FINE_GRAINED_PROMPT
    rec = CaptionStore(store_path).get(missing[0])
    assert rec.raw == GENERATED and rec.refined == REFINED and rec.frames == 4 and rec.model == "fake-vision-1"
    assert CaptionStore(store_path).text(missing[0]) == REFINED


def test_flush_every_counts_new_captions_only(tmp_path):
    path = tmp_path / "captions.json"
    store = CaptionStore(path)
    for key in ("cached-1", "cached-2"):
        store.put(key, CaptionRecord(GENERATED, REFINED, [], "earlier", "m", 2))
    store.flush()
    on_disk = []  # captions in the file when each request arrives
    items = [(k, lambda: frames(2, 16), None) for k in ("cached-1", "cached-2", "fails", "new-1", "new-2", "new-3")]
    with FakeVisionServer() as server:
        server.fail_next = 1
        server.on_request = lambda: on_disk.append(len(json.loads(path.read_text())["items"]))
        report = caption_clips(items, captioner(server.url), CaptionStore(path), flush_every=2)
    assert len(report.cached) == 2 and len(report.failed) == 1 and len(report.described) == 3
    assert on_disk == [2, 2, 2, 4]  # written after the 2nd new caption, not after the 2nd clip seen
    assert len(json.loads(path.read_text())["items"]) == 5


def test_clip_key_is_content_based(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        for k, f in enumerate(frames(2, 16)):
            Image.fromarray(f).save(folder / f"{k:05d}.png")
    assert clip_key(a) == clip_key(b)
    Image.fromarray(frames(1, 16, seed=9)[0]).save(b / "00001.png")
    assert clip_key(a) != clip_key(b)


def test_missing_key_stops_the_run_with_a_typed_error(tmp_path):
    cap = OpenAICaptioner(LLMSettings(model="m", api_key=None))
    with pytest.raises(LLMConfigError, match="API key"):
        caption_clips([("k", lambda: frames(2), None)], cap, CaptionStore(tmp_path / "c.json"))


def test_video_llava_fails_clearly_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CaptionBackendUnavailable, match="CUDA GPU"):
        VideoLLaVACaptioner().describe(frames(8))
    assert VideoLLaVACaptioner().prompt() == f"USER: <video>\n{FINE_GRAINED_PROMPT} ASSISTANT:"


def test_stream_dataset_feeds_cached_captions_and_reports_missing_ones(tmp_path):
    import dferclip
    from dferclip.models.fineclipper import fineclipper_config
    from dferclip.training.captions import CaptionRecord
    from dferclip.training.data import ClipDataset, ClipRecord

    records = []
    for i in range(2):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        for k, f in enumerate(frames(3, 32, seed=10 + i)):
            Image.fromarray(f).save(folder / f"{k:05d}.png")
        records.append(ClipRecord(str(folder), 3, i))
    store = CaptionStore(tmp_path / "captions.json")
    store.put(clip_key(records[0].path), CaptionRecord(GENERATED, REFINED, [], "test", "m", 3))
    model = dferclip.build_model(fineclipper_config("text", base="fineclipper-tiny"))
    wrapped = model.wrap_dataset(ClipDataset(records, model.input_config), captions=store)
    assert wrapped.missing_captions == [records[1].path]
    (a, la), (b, lb) = wrapped[0], wrapped[1]
    assert (la, lb) == (0, 1) and a["caption_present"].item() and not b["caption_present"].item()
    from dferclip.text.tokens import tokenize

    assert a["caption_tokens"].tolist() == tokenize([REFINED])[0].tolist()
    batch = {k: torch.stack([a[k], b[k]]) for k in a}
    model.eval()
    weights = model.stream_weights(batch)
    assert weights[0, 1] > 0 and weights[1, 1] == 0


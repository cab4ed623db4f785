"""FineCLIPER's high level: a fine-grained description of each clip's facial movements from a multimodal LLM,
refined to remove words that name or imply the emotion (label leakage), cached per clip as JSON data.

Back-ends (both implement :class:`Captioner`):

- :class:`OpenAICaptioner`: any OpenAI-compatible vision chat API; the clip's frames go as base64 JPEG
  ``image_url`` content parts after the prompt, through the ``openai`` client (injectable; keys never logged);
- :class:`VideoLLaVACaptioner`: the paper's Video-LLaVA-7B through ``transformers`` on a local CUDA GPU.

The prompt is the paper's, verbatim (:data:`FINE_GRAINED_PROMPT`). The paper does not say how its "Refine"
step works; :func:`refine_caption` is a rule-based clause filter that reproduces the paper's own examples.
"""
from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol, Sequence

import numpy as np

from ..errors import CaptionError, DferclipError
from ..files import write_json
from ..video.clips import clip_key  # noqa: F401  (re-exported: captions are keyed by it)

log = logging.getLogger(__name__)

FORMAT = "dferclip.captions/1"
FINE_GRAINED_PROMPT = (
    "You are a facial expression analyst. Identify emotions by analyzing the detailed movements of various "
    "facial features (mouth, chin, eyes, etc.) and implied actions (breathing rate, gaze direction) across a "
    "sequence. Provide a detailed description of the movements of various facial features and implied actions "
    "concisely."
)
FRAMES_NOTE = "The images are {n} frames of one video clip, in temporal order."


class CaptionBackendUnavailable(CaptionError):
    """The back-end cannot run at all here (no GPU, no package, no weights): no clip can be described."""


# --- refinement (label-leak removal) ---------------------------------------------------------------------
# Words that name or imply an emotion beyond the per-class families of dferclip/prompts/emotion_words.json.
EXTRA_EMOTION_WORDS = (
    "emotion", "emotions", "emotional", "emotionally", "mood", "feeling", "feelings", "amusement", "amused",
    "amusing", "positivity", "negativity", "contentment", "content", "excitement", "excited", "distress",
    "distressed", "upset", "frustration", "frustrated", "joyfulness", "delight", "pleasure", "enjoyment",
    "confusion", "confused", "embarrassment", "embarrassed", "shame", "pride", "proud", "tension", "tense",
    "playful", "playfulness", "hostile", "hostility", "displeasure", "dissatisfaction", "satisfaction",
)
# Expression words that describe a movement but give the label away (the paper drops "a slight smile").
EXPRESSION_WORDS = (
    "smile", "smiles", "smiling", "smiled", "grin", "grins", "grinning", "laugh", "laughs", "laughing",
    "laughter", "frown", "frowns", "frowning", "scowl", "scowling", "sneer", "sneering", "pout", "pouting",
    "cry", "cries", "crying", "sob", "sobbing", "tearful", "grimace", "grimacing",
)
INFERENCE_CUES = re.compile(
    r"\b(?:indicating|indicates|suggesting|suggests|implying|implies|conveying|conveys|reflecting|reflects|"
    r"expressing|expresses|hinting|hints|signaling|signalling|signals|revealing (?:a|an|his|her|their) "
    r"(?:sense|feeling|state)|which (?:may |might |could )?(?:suggest|indicate|show|imply|convey|reflect)s?|"
    r"showing signs of|as if|as though|giving (?:the|an|a) (?:impression|appearance|sense))\b",
    re.I,
)
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")


def leak_words(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Every word the refinement removes (emotion families of all classes, extras, expression words)."""
    from ..text.llm import emotion_words

    words = [w for family in emotion_words().values() for w in family]
    return tuple(dict.fromkeys([w.lower() for w in (*words, *EXTRA_EMOTION_WORDS, *EXPRESSION_WORDS, *extra)]))


def _leak_pattern(words: Sequence[str]) -> re.Pattern:
    alts = sorted((re.escape(w).replace(r"\ ", r"\s+") for w in words), key=len, reverse=True)
    return re.compile(r"(?<![A-Za-z])(?:" + "|".join(alts) + r")(?![A-Za-z])", re.I)


@dataclass
class RefinedCaption:
    text: str
    removed: list[str] = field(default_factory=list)  # the removed clauses and sentences, in order


def _refine_sentence(sentence: str, leak: re.Pattern) -> tuple[str, list[str]]:
    body = sentence.strip()
    end = re.search(r"[.!?]+$", body)
    stop = end.group(0) if end else "."
    body = body[: end.start()] if end else body
    removed: list[str] = []
    cue = INFERENCE_CUES.search(body)
    if cue:
        removed.append(body[cue.start():].strip(" ,;"))
        body = body[: cue.start()].rstrip(" ,;")
    segments = [s.strip() for s in body.split(",")]
    kept = []
    for i, seg in enumerate(segments):
        if leak.search(seg):
            removed.append(seg)
            if i == len(segments) - 1 and re.match(r"(?:and|or)\b", seg, re.I) and len(kept) > 1 \
                    and not re.match(r"(?:and|or)\b", kept[-1], re.I):
                kept[-1] = "and " + kept[-1]  # "a, b, and <leak>" -> "a, and b" (the paper's own rendering)
        elif seg:
            kept.append(seg)
    if leak.search(segments[0]) or len(" ".join(kept).split()) < 3:  # the main clause itself leaks
        return "", [sentence.strip()]
    text = ", ".join(kept)
    return text[0].upper() + text[1:] + stop, removed


def refine_caption(text: str, extra_words: Sequence[str] = ()) -> RefinedCaption:
    """Keep only the descriptions of physical movement: drop inference clauses ("indicating ..."), comma
    clauses naming an emotion or a label-revealing expression ("a slight smile"), and sentences whose main
    clause does ("The man displays a surprised expression.")."""
    leak = _leak_pattern(leak_words(extra_words))
    kept, removed = [], []
    for sentence in _SENTENCE.findall(" ".join(text.split())):
        if not sentence.strip():
            continue
        out, gone = _refine_sentence(sentence, leak)
        removed += gone
        if out:
            kept.append(out)
    return RefinedCaption(" ".join(kept), removed)


# --- clip identity and the cache --------------------------------------------------------------------------
@dataclass
class CaptionRecord:
    raw: str
    refined: str
    removed: list[str]
    backend: str
    model: str
    frames: int
    source: Optional[str] = None  # where the clip was (informative only; the key is its content hash)
    created: str = ""


class CaptionStore:
    """Captions per clip key in one JSON file (atomic writes). Call :meth:`flush` after :meth:`put`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.items: dict[str, CaptionRecord] = {}
        self.prompt = FINE_GRAINED_PROMPT
        self._dirty = False
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except json.JSONDecodeError as e:
                raise CaptionError(f"{self.path} is not valid JSON: {e}") from None
            if data.get("format") != FORMAT:
                raise CaptionError(f"{self.path} is not a caption file (format {data.get('format')!r})")
            self.prompt = data.get("prompt", FINE_GRAINED_PROMPT)
            self.items = {k: CaptionRecord(**v) for k, v in data.get("items", {}).items()}

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key: str) -> Optional[CaptionRecord]:
        return self.items.get(key)

    def text(self, key: str) -> Optional[str]:
        """The refined caption of a clip, or None when it has none."""
        rec = self.items.get(key)
        return rec.refined if rec is not None and rec.refined else None

    def put(self, key: str, record: CaptionRecord) -> None:
        self.items[key] = record
        self._dirty = True

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.items]

    def flush(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "prompt": self.prompt,
                "items": {k: asdict(v) for k, v in sorted(self.items.items())}}
        write_json(self.path, data, indent=1)
        self._dirty = False


# --- back-ends ------------------------------------------------------------------------------------------
class Captioner(Protocol):
    name: str
    model: str

    def describe(self, frames: Sequence[np.ndarray]) -> str:
        """RGB uint8 frames (H, W, 3) of one clip, in order -> the raw description."""


def pick_frames(frames: Sequence, n: int) -> list:
    """``n`` frames spread evenly over the clip (all of them when it has fewer)."""
    if len(frames) <= n:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    return [frames[i] for i in idx]


def jpeg_data_url(frame: np.ndarray, size: int, quality: int = 90) -> str:
    from PIL import Image

    im = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
    if max(im.size) > size:
        im.thumbnail((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class OpenAICaptioner:
    """An OpenAI-compatible vision chat API. ``client``: an ``openai.OpenAI`` (built from ``settings`` when
    None: ``LLMSettings`` reads OPENAI_API_KEY / OPENAI_BASE_URL / DFERCLIP_LLM_MODEL)."""

    name = "openai-compatible"

    def __init__(self, settings=None, client=None, *, num_frames: int = 8, image_size: int = 336,
                 max_tokens: int = 300, detail: Optional[str] = None):
        from ..text.llm import LLMSettings

        self.settings = settings or LLMSettings.from_env(temperature=0.2)
        self.client = client
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.max_tokens = int(max_tokens)
        self.detail = detail

    @property
    def model(self) -> str:
        return self.settings.model

    def messages(self, frames: Sequence[np.ndarray]) -> list[dict]:
        chosen = pick_frames(frames, self.num_frames)
        parts: list[dict] = [{"type": "text", "text": FINE_GRAINED_PROMPT},
                             {"type": "text", "text": FRAMES_NOTE.format(n=len(chosen))}]
        for f in chosen:
            image = {"url": jpeg_data_url(f, self.image_size)}
            if self.detail:
                image["detail"] = self.detail
            parts.append({"type": "image_url", "image_url": image})
        return [{"role": "user", "content": parts}]

    def describe(self, frames: Sequence[np.ndarray]) -> str:
        from ..errors import LLMReplyError
        from ..text.llm import call_server, make_client

        if not len(frames):
            raise CaptionError("a clip without frames cannot be described")
        if self.client is None:
            self.client = make_client(self.settings)
        resp = call_server(self.settings, lambda: self.client.chat.completions.create(
            model=self.settings.model, messages=self.messages(frames), temperature=self.settings.temperature,
            max_tokens=self.max_tokens))  # one deadline for the request and its retries
        try:
            content = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str) or not content.strip():
            raise LLMReplyError(f"{self.settings.describe()} sent a reply without text")
        return content.strip()


class VideoLLaVACaptioner:
    """Video-LLaVA-7B (the paper's captioner) through ``transformers`` on a CUDA GPU, loaded on first use.

    Needs ``transformers`` with ``VideoLlavaForConditionalGeneration``, the weights (about 15 GB in fp16;
    ``load_in_4bit`` needs ``bitsandbytes``) in the Hugging Face cache or reachable, and a GPU.
    """

    name = "video-llava"

    def __init__(self, model: str = "LanguageBind/Video-LLaVA-7B-hf", *, device: str = "cuda",
                 num_frames: int = 8, max_new_tokens: int = 300, load_in_4bit: bool = False):
        self.model = model
        self.device = device
        self.num_frames = int(num_frames)  # the released video tower takes 8 frames
        self.max_new_tokens = int(max_new_tokens)
        self.load_in_4bit = load_in_4bit
        self._loaded = None

    def prompt(self) -> str:
        return f"USER: <video>\n{FINE_GRAINED_PROMPT} ASSISTANT:"

    def _load(self):
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise CaptionBackendUnavailable("Video-LLaVA needs a CUDA GPU and none is available here; use the "
                               "OpenAI-compatible back-end or run the captioning step on a GPU machine")
        try:
            from transformers import (
                VideoLlavaForConditionalGeneration,
                VideoLlavaProcessor,
            )
        except ImportError:
            raise CaptionBackendUnavailable("Video-LLaVA needs transformers>=4.42 (pip install transformers "
                               "accelerate)") from None
        kwargs: dict = {"torch_dtype": torch.float16, "device_map": self.device}
        if self.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True,
                                                               bnb_4bit_compute_dtype=torch.float16)
        try:
            processor = VideoLlavaProcessor.from_pretrained(self.model)
            model = VideoLlavaForConditionalGeneration.from_pretrained(self.model, **kwargs)
        except OSError as e:
            raise CaptionBackendUnavailable(f"cannot load {self.model}: {str(e).splitlines()[0]} (offline without the "
                               "weights in the Hugging Face cache?)") from None
        self._loaded = (processor, model.eval())

    def describe(self, frames: Sequence[np.ndarray]) -> str:
        import torch

        if not len(frames):
            raise CaptionError("a clip without frames cannot be described")
        if self._loaded is None:
            self._load()
        processor, model = self._loaded
        chosen = pick_frames(frames, self.num_frames)
        chosen += [chosen[-1]] * (self.num_frames - len(chosen))
        inputs = processor(text=self.prompt(), videos=np.stack(chosen), return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        text = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        if not text.strip():
            raise CaptionError("Video-LLaVA returned an empty description")
        return text.strip()


# --- captioning a set of clips ----------------------------------------------------------------------------
@dataclass
class CaptionReport:
    described: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, message)

    def summary(self) -> str:
        s = f"{len(self.described)} described, {len(self.cached)} already cached, {len(self.failed)} failed"
        if self.failed:
            s += f" (first: {self.failed[0][0]}: {self.failed[0][1]})"
        return s


def caption_clips(clips: Iterable[tuple[str, Callable[[], Sequence[np.ndarray]], Optional[str]]],
                  captioner: Captioner, store: CaptionStore, *, overwrite: bool = False,
                  flush_every: int = 20, extra_leak_words: Sequence[str] = ()) -> CaptionReport:
    """Describe and refine each ``(key, load_frames, source)``; cached clips are skipped. A clip that fails is
    reported and the rest go on; errors no clip can get past (no key, no GPU, no weights) stop the run."""
    from ..errors import LLMConfigError, LLMConnectionError

    report = CaptionReport()
    try:
        for key, load_frames, source in clips:
            if key in store and not overwrite:
                report.cached.append(key)
                continue
            try:
                frames = load_frames()
                raw = captioner.describe(frames)
            except (LLMConfigError, LLMConnectionError, CaptionBackendUnavailable):
                raise  # no later clip would get past these
            except DferclipError as e:
                report.failed.append((key, str(e)))
                log.warning("caption for %s failed: %s", source or key, e)
                continue
            refined = refine_caption(raw, extra_leak_words)
            store.put(key, CaptionRecord(raw, refined.text, refined.removed, captioner.name, captioner.model,
                                         len(frames), source, _dt.datetime.now(_dt.timezone.utc).isoformat()))
            report.described.append(key)
            if flush_every and len(report.described) % flush_every == 0:  # every N new captions
                store.flush()
    finally:
        store.flush()
    return report

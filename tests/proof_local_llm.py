"""The tiny describer LLMs of tests/test_local_llm.py and their proof, shared with benchmarks/bench_proofs.py
(every seed and CPU kernel set): a ~45k-parameter Llama trained here answers each class's prompt with exactly
the reply it was taught, under greedy decoding."""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch

from dferclip.text.llm import get_style

CLASSES = ["happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear"]
# What the describer learns to answer; happiness's reply names its emotion, so the leak check must flag it.
REPLIES = dict(zip(CLASSES, [
    "a happy face with raised cheeks and crinkled eyes.",
    "drooping eyelids, lowered mouth corners, and inner brows pulled up.",
    "relaxed forehead, steady gaze, and closed lips.",
    "lowered brows, glaring eyes, and pressed lips.",
    "wide open eyes, arched brows, and a dropped jaw.",
    "wrinkled nose, raised upper lip, and narrowed eyes.",
    "stretched lips, tense eyelids, and brows drawn together.",
]))
GARBAGE = "{ [ ] } [ { ] ["
TEMPLATE = "Describe a face showing {name}."  # a short prompt keeps training to a few seconds
SYSTEM = get_style("dferclip").system  # the style's own system prompt, so the CLI needs no --system
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}")
SPECIALS = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
LR, HIDDEN = 3e-3, 48  # at 1e-2, seed 1 stalled with two replies tied (default kernels)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def build_tiny_lm(folder, replies: dict[str, str], seed: int = 0) -> None:
    """A word-level tokenizer with a chat template and a ~45k-parameter Llama trained to answer each class's
    prompt with ``replies[class]``, saved with ``save_pretrained`` like any Hub model."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    prompts = {c: [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEMPLATE.format(name=c)}]
               for c in replies}
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c, reply in replies.items():
        for w in _words(f"system user assistant {SYSTEM} {prompts[c][1]['content']} {reply}"):
            vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece()  # joins words with spaces, none before punctuation
    core.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<|im_start|>", eos_token="<|im_end|>")
    tok.chat_template = CHAT_TEMPLATE
    eos = tok.convert_tokens_to_ids("<|im_end|>")

    rows = []
    for c, reply in replies.items():
        prompt = tok.apply_chat_template(prompts[c], add_generation_prompt=True, return_dict=True)["input_ids"]
        answer = tok(reply, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    length = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (length - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (length - len(lab)) for _, lab in rows])
    mask = (ids != pad).long()

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        # until every reply token leads the next-best token by a logit margin of 2 (teacher-forced, which is the
        # greedy path once every token is right); stopping at a loss of 0.02 left 1-2 replies of 7 wrong at
        # seeds 1 and 2 under the default and AVX2 kernels
        for step in range(1000):
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            if step % 10 == 9 and _token_margin(out.logits.detach(), labels) >= 2.0:
                break
    finally:
        torch.set_num_threads(threads)
    model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def _token_margin(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The smallest lead of a labelled next token's logit over the best other token's (causal LM shift)."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    picked, want = logits[keep], labels[keep]
    right = picked.gather(1, want[:, None])[:, 0]
    return float((right - picked.scatter(1, want[:, None], float("-inf")).max(1).values).min())


def figures(seed: int = 0) -> dict:
    """Share of classes whose greedy answer (up to 40 new tokens, as the tests ask) is exactly the taught reply,
    for the describer and the garbage emitter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    with tempfile.TemporaryDirectory(prefix="proof-llm-") as tmp:
        for name, replies in (("describer", REPLIES), ("garbage", dict.fromkeys(CLASSES, GARBAGE))):
            folder = Path(tmp) / name
            build_tiny_lm(folder, replies, seed)
            tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
            exact, margins = 0, []
            for c, reply in replies.items():
                messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TEMPLATE.format(name=c)}]
                inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                 return_tensors="pt")
                n = inputs["input_ids"].shape[1]
                want = tok(reply, add_special_tokens=False)["input_ids"] + [model.generation_config.eos_token_id]
                full = torch.cat([inputs["input_ids"][0], torch.tensor(want)])[None]
                with torch.no_grad():
                    ids = model.generate(**inputs, do_sample=False, max_new_tokens=40)[0, n:]
                    # teacher-forced: how far each reply token's logit is above the best other token's
                    margins.append(_token_margin(model(input_ids=full).logits, torch.tensor([[-100] * n + want])))
                exact += tok.decode(ids, skip_special_tokens=True).strip() == reply
            out[f"{name}_exact"] = exact / len(replies)
            out[f"{name}_logit_margin"] = min(margins)  # > 0 at every token: greedy decoding gives the reply
    return out


BOUNDS = [("describer_exact", ">=", 1.0), ("garbage_exact", ">=", 1.0),
          ("describer_logit_margin", ">", 0.0), ("garbage_logit_margin", ">", 0.0)]

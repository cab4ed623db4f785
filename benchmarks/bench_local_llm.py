"""The local description model: one description for each of 7 classes, estimated on this machine.

    python benchmarks/bench_local_llm.py [--json out.json] [--style dferclip] [--load]

The real model (Qwen2.5-0.5B-Instruct, dferclip/text/local_models.json) cannot be downloaded here, so this builds
a ``Qwen2ForCausalLM`` of exactly its shape (config values written out below, from the model's config.json)
with random weights; time per token does not depend on the weight values. What is not the real model:

- prompt lengths: the real prompts (system + user, the style's template for each DFEW class) are counted with
  CLIP's BPE (a stand-in for Qwen's tokenizer, about as fine-grained on English) plus the chat template's
  tokens; random token ids of that length are fed;
- reply lengths: a random model never stops, so each reply is forced to the length of the official
  DFER-CLIP description of that class (+1 for the end-of-turn token). The worst case, a reply cut at its token
  budget (:func:`reply_budget`), is estimated from the prefill time and the time per generated token.

Decoding uses :meth:`LocalChat.decoding` on top of the model's own generation config (repetition penalty,
top-k/top-p) at the default temperature 0.7, i.e. the arguments ``generate`` uses. Wall time and this process's
CPU time are both reported: on a shared machine the wall time includes waiting for a core. ``--load`` also
times loading the weights from a local safetensors snapshot (bf16 on disk -> fp32, as after the one-time ~1 GB
download).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import machine, write_json  # noqa: E402
from dferclip import runtime  # noqa: E402
from dferclip.text.descriptions import official_descriptions  # noqa: E402
from dferclip.text.llm import LLMSettings, get_style, render_prompt  # noqa: E402
from dferclip.text.local_llm import LocalChat, get_local_model, reply_budget  # noqa: E402
from dferclip.text.tokens import token_count  # noqa: E402

# Qwen/Qwen2.5-0.5B-Instruct config.json and generation_config.json (the values that set the compute).
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
                  bos_token_id=151643, eos_token_id=151645, use_sliding_window=False)
QWEN25_GENERATION = dict(bos_token_id=151643, pad_token_id=151643, eos_token_id=[151645, 151643], do_sample=True,
                         repetition_penalty=1.1, temperature=0.7, top_p=0.8, top_k=20)
CHAT_TEMPLATE_TOKENS = 14  # <|im_start|>system\n ... <|im_end|>\n<|im_start|>user\n ... <|im_end|>\n<|im_start|>assistant\n


def build_model(dtype: torch.dtype, device: torch.device):
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B)).to(dtype=dtype, device=device).eval()
    model.generation_config = GenerationConfig(**QWEN25_GENERATION)
    return model


def class_workload(style: str) -> list[tuple[str, int, int]]:
    """(class, prompt tokens, reply tokens) for DFEW's 7 classes."""
    st = get_style(style)
    official = official_descriptions(7)
    out = []
    for cls, descs in zip(official.classes, official.descriptions):
        prompt = render_prompt(st.user, cls, official.classes, st.n)
        n_prompt = token_count(st.system) + token_count(prompt) - 4 + CHAT_TEMPLATE_TOKENS  # less CLIP's 2x SOT/EOT
        n_reply = sum(token_count(d) - 2 for d in descs[: st.n]) + 1
        out.append((cls, n_prompt, n_reply))
    return out


def time_reply(chat: LocalChat, n_prompt: int, n_reply: int, temperature: float) -> tuple[float, float]:
    """(wall s, CPU s) of one reply of exactly ``n_reply`` tokens to a prompt of ``n_prompt`` tokens."""
    model = chat.model
    ids = torch.randint(0, 150000, (1, n_prompt), device=model.device)
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():  # min_new_tokens: a random model never ends its turn; force the real length
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), min_new_tokens=n_reply,
                             **chat.decoding(temperature, n_reply))
    assert out.shape[1] - n_prompt == n_reply
    return time.perf_counter() - wall, time.process_time() - cpu


def time_load(dtype: torch.dtype) -> float:
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        build_model(torch.bfloat16, torch.device("cpu")).save_pretrained(folder)  # as on the Hub: bf16
        t0 = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True)
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--style", default="dferclip")
    ap.add_argument("--load", action="store_true", help="also time loading a 1 GB snapshot")
    args = ap.parse_args()

    dev = runtime.device()
    dtype = runtime.compute_dtype(dev)
    spec = get_local_model()
    settings = LLMSettings(backend="local")
    model = build_model(dtype, dev)
    params = sum(p.numel() for p in model.parameters())
    assert params == spec.parameters, (params, spec.parameters)
    chat = LocalChat(spec, tokenizer=None, model=model)
    work = class_workload(args.style)
    load1 = os.getloadavg()[0]

    time_reply(chat, 16, 2, settings.temperature)  # warm-up
    prefill_wall, prefill_cpu = time_reply(chat, work[0][1], 1, settings.temperature)
    rows = []
    for cls, n_prompt, n_reply in work:
        wall, cpu = time_reply(chat, n_prompt, n_reply, settings.temperature)
        rows.append({"class": cls, "prompt_tokens": n_prompt, "reply_tokens": n_reply, "s": wall, "cpu_s": cpu})
    total, total_cpu = sum(r["s"] for r in rows), sum(r["cpu_s"] for r in rows)
    tokens = sum(r["reply_tokens"] - 1 for r in rows)
    per_token = (total - len(rows) * prefill_wall) / tokens
    budget = reply_budget(settings.max_new_tokens, get_style(args.style).n)
    bound = prefill_wall + (budget - 1) * per_token
    load_s = time_load(dtype) if args.load else None
    load2 = os.getloadavg()[0]

    print(f"Machine: {machine()}")
    print(f"\nModel: {spec.repo_id} shape, random weights, {params / 1e6:.0f} M parameters, {dev} "
          f"{runtime.dtype_name(dtype)}; style {args.style!r}, temperature {settings.temperature}\n")
    print("| class | prompt tokens | reply tokens | wall s | CPU s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['class']} | {r['prompt_tokens']} | {r['reply_tokens']} | {r['s']:.1f} | {r['cpu_s']:.1f} |")
    print(f"| **7 classes** | | {sum(r['reply_tokens'] for r in rows)} | **{total:.1f}** | {total_cpu:.1f} |")
    print(f"\nPrefill of a {work[0][1]}-token prompt: {prefill_wall:.1f} s wall ({prefill_cpu:.1f} s CPU); then "
          f"{per_token:.2f} s per generated token. Worst case per class (reply cut at its budget of {budget} "
          f"tokens): about {bound:.0f} s.")
    if load_s is not None:
        print(f"Loading the weights from a local snapshot (bf16 -> {runtime.dtype_name(dtype)}): {load_s:.1f} s")
    print(f"load average before/after: {load1:.2f} / {load2:.2f} on {os.cpu_count()} CPUs")
    write_json(args.json, {"machine": machine(), "model": spec.repo_id, "parameters": params, "device": str(dev),
                           "dtype": runtime.dtype_name(dtype), "style": args.style, "classes": rows,
                           "total_s": total, "total_cpu_s": total_cpu, "prefill_s": prefill_wall,
                           "per_token_s": per_token, "reply_budget": budget, "bound_s": bound,
                           "load_s": load_s, "loadavg": [load1, load2]})


if __name__ == "__main__":
    main()

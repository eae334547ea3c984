"""ClipCap on the offline SmolLM2-135M: loading, training steps and decoding, before vs after (issue 13).

* Loading: transformers' GGUF reader (dequantizes the Q4_1 file at every load: what ``load_lm`` did before) vs the
  float32 safetensors copy that ``load_lm`` now writes once under the cache root and reads afterwards.
* Training: steps/s of the transformer-mapper ClipCap with the frozen LM (forward + backward + Adam step), batch B
  of pooled 1280-d features and captions of T tokens (the LM computes the same either way; printed for reference).
* Decoding: beam search (beam 3, 16 tokens) over N images, recomputing the LM over prefix + tokens at every step
  (before) vs the LM's key/value cache (after). Captions asserted identical, their log-probabilities within 1e-4.

Every pair is interleaved over R repetitions (median and spread), with the load average before and after.

    .venv/bin/python bench/bench_clipcap.py [--reps 5] [--images 16] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py

from modalbridge.captioning import clipcap, decoding
from modalbridge.captioning.clipcap import ClipCap, RecomputingClipCap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    directory, gguf = clipcap.lm_location("smollm2")
    before = loadavg()

    # 1) loading: GGUF dequantization at every load vs the cached float copy
    os.environ["MODALBRIDGE_CACHE"] = tempfile.mkdtemp(prefix="mb-bench-clipcap-")
    clipcap.load_lm("smollm2")  # writes the cached copy once (not timed)
    load_t, _ = interleave({
        "GGUF every load": lambda: AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf),
        "cached safetensors": lambda: clipcap.load_lm("smollm2"),
    }, args.reps)

    # 2) training steps and 3) decoding, on one model
    torch.manual_seed(0)
    model = ClipCap.from_lm("smollm2", feature_dim=1280, prefix_length=10, mapper="transformer", feature="pooled")
    old = RecomputingClipCap(model.config, lm=model.lm, tokenizer=model.tokenizer)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(args.batch, 1280, generator=g)
    ids = torch.randint(10, model.config.vocab_size, (args.batch, args.tokens), generator=g)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = model(feats, ids, ids.roll(-1, 1)).loss
        loss.backward()
        opt.step()
        return float(loss)

    train_t, _ = interleave({"train step": train_step}, args.reps)
    model.eval()
    old.mapper.load_state_dict(model.mapper.state_dict())  # the mapper after the training steps above
    old.eval()
    memory = torch.randn(args.images, 1280, generator=g)
    c = model.config

    def decode(m):
        with torch.no_grad():
            return decoding.beam_search(m, memory, c.bos_id, c.eos_id, beam_size=3, max_len=args.tokens)

    dec_t, outs = interleave({"recompute": lambda: decode(old), "KV cache": lambda: decode(model)}, args.reps)
    after = loadavg()
    a, b = outs["recompute"][0], outs["KV cache"][0]
    same = sum(x == y for x, y in zip(a.tokens, b.tokens, strict=True))
    worst = max(abs(x - y) for x, y in zip(a.logprob, b.logprob, strict=True))
    # The two compute the same function with other matrix shapes (float error ~1e-6): a caption could differ only
    # where two beams are tied that closely, and then its score would still agree.
    assert same == len(a.tokens) and worst < 1e-4, f"{same}/{len(a.tokens)} captions identical; scores off by {worst}"

    load_ratio = speedups(load_t["GGUF every load"], load_t["cached safetensors"])
    dec_ratio = speedups(dec_t["recompute"], dec_t["KV cache"])
    print(f"SmolLM2-135M ({gguf}), {torch.get_num_threads()} threads, {args.reps} interleaved repetitions; "
          f"load average before {before}, after {after}")
    for k, v in load_t.items():
        print(f"  load, {k:20s} {spread(v, fmt='.2f')} s")
    print(f"  load speed-up {spread(load_ratio, fmt='.1f')}x")
    print(f"  train step (batch {args.batch}, {args.tokens} tokens, transformer mapper, frozen LM) "
          f"{spread(train_t['train step'], fmt='.2f')} s -> {1 / summary(train_t['train step'])['median']:.2f} "
          "steps/s")
    for k, v in dec_t.items():
        print(f"  beam 3 over {args.images} images, {k:10s} {spread(v, fmt='.2f')} s")
    print(f"  decoding speed-up {spread(dec_ratio, fmt='.1f')}x; {same} of {len(a.tokens)} captions identical, "
          f"scores of the chosen captions within {worst:.1e}")
    report("clipcap", reps=args.reps, images=args.images, batch=args.batch,
           load_s={k: summary(v) for k, v in load_t.items()}, load_ratio=summary(load_ratio),
           train_step_s=summary(train_t["train step"]), decode_s={k: summary(v) for k, v in dec_t.items()},
           decode_ratio=summary(dec_ratio), identical_captions=same, score_diff=worst, load_before=before,
           load_after=after)


if __name__ == "__main__":
    main()

"""ClipCap on the offline SmolLM2-135M: loading, training steps and decoding, before vs after (issue 13).

* Loading: transformers' GGUF reader (dequantizes the Q4_1 file at every load: what ``load_lm`` did before) vs the
  float32 safetensors copy that ``load_lm`` now writes once under the cache root and reads afterwards.
* Training (forward + backward + Adam step of the transformer-mapper ClipCap with the frozen LM; batches of B pooled
  1280-d features and captions of 6..T tokens, lengths uniform, the same caption set for every setting):
  - before: the shape of configs/caption/clipcap_coco.yaml (prefix 40, clip length 40) as training ran it: logits
    over every position (prefix and padding included) and batches in random order (padded to their longest);
  - same shape, after: the LM's output layer only on the scored positions, fused with the loss (``ClipCap.forward``
    with targets: no (N, V) logits stored) and length-grouped batches (``data.group_by_length``); the two losses on
    one batch are asserted equal;
  - CPU config, after: prefix 10, clip length 10 (configs/caption/clipcap_fashion.yaml) with those changes;
  - the same with ``model.params.lm_dtype=bfloat16`` (the frozen LM's matrices stored and multiplied in bfloat16,
    about 3x float32's matmul rate on CPUs with AVX512-BF16 or AMX; residual stream, norms, mapper and loss in
    float32); its loss on one batch is asserted within 2 % of float32's. It trains like float32 (docs/results.md,
    "ClipCap").
  - the same trained under ``trainer.precision=bf16-mixed`` (configs/caption/clipcap_fashion.yaml): the trainable
    mapper's products under bfloat16 autocast too (float32 weights; plain attention, see
    ``clipcap.cpu_autocast_attention``); its loss on one batch is asserted within 2 % of float32's.
  "Before" steps with the ``_foreach`` Adam that training used then; every "after" row with the fused Adam that
  ``BridgeModule.configure_optimizers`` now picks. Reported as steps/s and the ratio to before (per repetition: median
  and spread).
* Decoding: beam search (beam 3, 16 tokens) over N images, recomputing the LM over prefix + tokens at every step
  (before) vs the LM's key/value cache (after). Captions asserted identical, their log-probabilities within 1e-4.

Every pair is interleaved over R repetitions (median and spread), with the load average before and after.

    .venv/bin/python bench/bench_clipcap.py [--reps 5] [--images 16] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF reader draws a bar per load (the timed ones too)

import torch  # noqa: E402
from common import interleave, loadavg, report, speedups, spread, summary  # bench/common.py

from modalbridge.captioning import decoding, lm
from modalbridge.captioning.clipcap import ClipCap, RecomputingClipCap
from modalbridge.captioning.decoder import IGNORE
from modalbridge.training.batching import EpochSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--train-batch", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=4, help="steps per timed repetition")
    ap.add_argument("--train-tokens", type=int, default=48, help="longest training caption (LM tokens)")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    directory, gguf = lm.lm_location("smollm2")
    before = loadavg()

    # 1) loading: GGUF dequantization at every load vs the cached float copy
    os.environ["MODALBRIDGE_CACHE"] = tempfile.mkdtemp(prefix="mb-bench-clipcap-")
    lm.load_lm("smollm2")  # writes the cached copy once (not timed)
    load_t, _ = interleave({
        "GGUF every load": lambda: AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=gguf),
        "cached safetensors": lambda: lm.load_lm("smollm2"),
    }, args.reps)

    # 2) training steps: before vs after at one shape, and the CPU config
    torch.manual_seed(0)
    build = dict(lm_spec="smollm2", feature_dim=1280, mapper="transformer", feature="pooled")
    coco = ClipCap.from_lm(**build, prefix_length=40, clip_length=40)
    cpu = ClipCap.from_lm(**build, prefix_length=10, clip_length=10)
    cpu_bf16 = ClipCap.from_lm(**build, prefix_length=10, clip_length=10, lm_dtype="bfloat16")
    cpu_bf16.load_state_dict(cpu.state_dict(), strict=False)  # the same mapper; the LM is the same frozen copy
    full_logits = ClipCap.from_lm(**build, prefix_length=40, clip_length=40)
    full_logits.load_state_dict(coco.state_dict(), strict=False)
    full_logits._body_and_head = lambda: None  # the old training path: logits everywhere, ignore_index on padding
    g = torch.Generator().manual_seed(0)
    n_caps = args.train_batch * args.train_steps
    lengths = torch.randint(6, args.train_tokens + 1, (n_caps,), generator=g).tolist()
    pad_id = coco.config.pad_id
    caps = [torch.randint(10, coco.config.vocab_size, (n,), generator=g) for n in lengths]
    feats = torch.randn(n_caps, 1280, generator=g)

    def batches(grouped: bool) -> list:
        order = list(EpochSampler(n_caps, seed=0, lengths=lengths if grouped else None, group=n_caps))
        out = []
        for k in range(0, n_caps, args.train_batch):
            idx = order[k : k + args.train_batch]
            T = max(lengths[i] for i in idx)
            ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
            targets = torch.full((len(idx), T), IGNORE, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : lengths[i]] = caps[i]
                targets[r, : lengths[i] - 1] = caps[i][1:]
            out.append((feats[idx], ids, targets))
        return out

    def trainer(model, data, fused=True, autocast=False):
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=fused or None)

        def epoch():  # args.train_steps steps; the time per step is epoch / steps
            model.train()
            for f, ids, targets in data:
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # as Lightning's bf16-mixed
                    loss = model(f, ids, targets).loss
                loss.backward()
                opt.step()
        return epoch

    random_batches, grouped_batches = batches(False), batches(True)
    f, ids, targets = random_batches[0]
    with torch.no_grad():  # same weights, same batch: the two training paths give one loss
        a, b = full_logits(f, ids, targets).loss, coco(f, ids, targets).loss
    assert abs(float(a) - float(b)) < 1e-4 * max(1.0, abs(float(a))), (float(a), float(b))
    with torch.no_grad():  # the bf16 LM: the same loss to bf16 rounding
        c_ = cpu_bf16(f, ids, targets).loss
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # and with the mapper under autocast too
        m_ = cpu_bf16(f, ids, targets).loss
    c32 = cpu(f, ids, targets).loss.detach()
    bf16_rel = abs(float(c_) - float(c32)) / abs(float(c32))
    mixed_rel = abs(float(m_) - float(c32)) / abs(float(c32))
    assert bf16_rel < 0.02 and mixed_rel < 0.02, (float(c_), float(m_), float(c32))
    pad = {k: sum(ids.numel() for _, ids, _ in d) / sum(lengths) - 1 for k, d in
           (("random", random_batches), ("grouped", grouped_batches))}
    train_t, _ = interleave({
        "before (prefix 40, full logits, random batches)": trainer(full_logits, random_batches, fused=False),
        "after, same shape (prefix 40)": trainer(coco, grouped_batches),
        "after, CPU config (prefix 10)": trainer(cpu, grouped_batches),
        "after, CPU config, lm_dtype=bfloat16 (prefix 10)": trainer(cpu_bf16, grouped_batches),
        "after, CPU config, lm_dtype=bfloat16, bf16-mixed": trainer(cpu_bf16, grouped_batches, autocast=True),
    }, args.reps)
    train_t = {k: [t / args.train_steps for t in v] for k, v in train_t.items()}
    first = next(iter(train_t))
    train_ratio = {k: speedups(train_t[first], v) for k, v in train_t.items() if k != first}
    del coco, cpu, cpu_bf16, full_logits

    # 3) decoding, on one model
    model = ClipCap.from_lm("smollm2", feature_dim=1280, prefix_length=10, mapper="transformer", feature="pooled")
    old = RecomputingClipCap(model.config, lm=model.lm, tokenizer=model.tokenizer)
    model.eval()
    old.mapper.load_state_dict(model.mapper.state_dict())
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
    print(f"  training, batch {args.train_batch}, captions of 6..{args.train_tokens} tokens, transformer mapper, "
          f"frozen LM; padding {pad['random']:.0%} of caption tokens in random batches, {pad['grouped']:.0%} grouped")
    for k, v in train_t.items():
        ratio = f"   {spread(train_ratio[k], fmt='.1f')}x before" if k in train_ratio else ""
        print(f"    {k:48s} {spread(v, fmt='.2f')} s/step = {1 / summary(v)['median']:.2f} steps/s{ratio}")
    for k, v in dec_t.items():
        print(f"  beam 3 over {args.images} images, {k:10s} {spread(v, fmt='.2f')} s")
    print(f"  decoding speed-up {spread(dec_ratio, fmt='.1f')}x; {same} of {len(a.tokens)} captions identical, "
          f"scores of the chosen captions within {worst:.1e}")
    report("clipcap", reps=args.reps, images=args.images, batch=args.batch,
           load_s={k: summary(v) for k, v in load_t.items()}, load_ratio=summary(load_ratio),
           train_step_s={k: summary(v) for k, v in train_t.items()},
           train_ratio={k: summary(v) for k, v in train_ratio.items()}, train_padding=pad,
           bf16_loss_rel_diff=bf16_rel, bf16_mixed_loss_rel_diff=mixed_rel,
           decode_s={k: summary(v) for k, v in dec_t.items()},
           decode_ratio=summary(dec_ratio), identical_captions=same, score_diff=worst, load_before=before,
           load_after=after)


if __name__ == "__main__":
    main()

"""Batched vs per-image beam search with a Show-Attend-Tell sized toy decoder.

Decoder: additive attention over 49 regions (7x7 grid) of 512-d features, LSTM cell with hidden 512, embeddings 512,
vocabulary 5000; random weights (speed does not depend on training), EOS logit biased so captions end at varied
lengths. Both runs decode the same images with the same ``beam_search``; the per-image run calls it once per image.
The captions must be identical (asserted); the script prints both wall times and their ratio.

    .venv/bin/python bench/bench_beam.py [--images 256] [--beam 5] [--max-len 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from modalbridge.captioning.decoding import beam_search

BOS, EOS = 1, 2


class SATToy(nn.Module):
    """Show-Attend-Tell decoder step (Xu et al. 2015, https://arxiv.org/abs/1502.03044) with random weights."""

    def __init__(self, vocab=5000, feat=512, hidden=512, embed=512, att=512, eos_bias=1.5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(vocab, embed)
        self.init_h, self.init_c = nn.Linear(feat, hidden), nn.Linear(feat, hidden)
        self.att_m, self.att_h, self.att_v = nn.Linear(feat, att), nn.Linear(hidden, att), nn.Linear(att, 1)
        self.gate = nn.Linear(hidden, feat)
        self.cell = nn.LSTMCell(embed + feat, hidden)
        self.out = nn.Linear(hidden, vocab)
        with torch.no_grad():
            self.out.weight.mul_(8.0)  # peaky distributions, like a trained captioner
            self.out.bias[EOS] += eos_bias

    def init_state(self, memory):  # memory (B, P, F)
        mean = memory.mean(1)
        proj = self.att_m(memory)  # (B, P, A) precomputed once, as SAT implementations do
        return {"h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean)), "mem": memory, "proj": proj}

    def step(self, tokens, state):
        h, c, mem = state["h"], state["c"], state["mem"]
        e = self.att_v(torch.tanh(state["proj"] + self.att_h(h)[:, None])).squeeze(-1)  # (B, P)
        alpha = torch.softmax(e, -1)
        ctx = torch.sigmoid(self.gate(h)) * (alpha[..., None] * mem).sum(1)  # (B, F)
        h, c = self.cell(torch.cat([self.embed(tokens), ctx], -1), (h, c))
        return torch.log_softmax(self.out(h), -1), {"h": h, "c": c, "mem": mem, "proj": state["proj"]}, alpha


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--max-len", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    dec = SATToy().to(device).eval()
    memory = torch.randn(args.images, 49, 512, generator=torch.Generator().manual_seed(1)).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    beam_search(dec, memory[:2], BOS, EOS, beam_size=args.beam, max_len=3)  # warm-up
    sync()
    t0 = time.perf_counter()
    batched = beam_search(dec, memory, BOS, EOS, beam_size=args.beam, max_len=args.max_len)
    sync()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [beam_search(dec, m[None], BOS, EOS, beam_size=args.beam, max_len=args.max_len) for m in memory]
    sync()
    t_single = time.perf_counter() - t0

    same = sum(s.tokens[0] == b for s, b in zip(single, batched.tokens, strict=True))
    lengths = [len(t) for t in batched.tokens]
    print(
        f"device={device} threads={torch.get_num_threads()} images={args.images} beam={args.beam} "
        f"max_len={args.max_len} vocab=5000 hidden=512 regions=49"
    )
    print(
        f"caption lengths: min {min(lengths)} mean {sum(lengths) / len(lengths):.1f} max {max(lengths)}; "
        f"finished {sum(batched.finished)}/{len(lengths)}"
    )
    print(f"batched   : {t_batched:8.3f} s  ({1000 * t_batched / args.images:.2f} ms/image)")
    print(f"per-image : {t_single:8.3f} s  ({1000 * t_single / args.images:.2f} ms/image)")
    print(f"speed-up  : {t_single / t_batched:8.1f}x")
    print(f"identical captions: {same}/{args.images}")
    assert same == args.images, "batched and per-image beam search disagree"


if __name__ == "__main__":
    main()

"""Peak memory (max RSS) of the commands, and the web server's throughput under concurrent clients.

Memory: each command runs as a fresh ``python -m modalbridge`` process with the default embedded models and its max
RSS is read from the kernel when it exits (``os.wait4``): ``draw``, ``caption`` (one PNG), ``classify``, ``train``
(the tiny captioning config on 32 generated images, 2 epochs: extraction and a few training steps) and ``serve``
(after the throughput run below); ``python -c "import torch"`` is the floor.

Throughput: ``modalbridge serve`` on a free port; C clients (threads with keep-alive-less HTTP requests) each send
requests back to back until N requests are answered, for C = 8 and 32, to ``/api/draw`` (4 images of a prompt) and
``/api/caption`` (one PNG). Prints requests/s and the p50/p95 latency; every answer must be 200 with images or a
caption (asserted). The server's model calls are serialised by its gate (``--workers 1``), so the latency grows with C
while the throughput shows what one model worker sustains.

    .venv/bin/python bench/bench_serve_memory.py [--requests 96] [--clients 8 32]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from common import loadavg, report  # bench/common.py

ROOT = Path(__file__).resolve().parents[1]


def max_rss_mb(argv: list[str], env: dict) -> tuple[float, int]:
    """Run ``argv``; its max RSS in MB (from the kernel's accounting of that child) and its exit code."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"{argv[3:]} failed ({p.returncode}): {err.strip()[-1500:]}")
    return usage.ru_maxrss / 1024, p.returncode


def shapes_dataset(root: Path, n: int = 48) -> Path:
    """A ``folder:`` caption dataset of coloured squares on grey (train/val/test), for a short training run."""
    from PIL import Image

    root.mkdir(parents=True)
    lines = []
    for i in range(n):
        colour = ["red", "green", "blue"][i % 3]
        img = Image.new("RGB", (96, 96), (90, 90, 90))
        img.paste({"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}[colour], (24, 24, 72, 72))
        img.save(root / f"{i:03d}.png")
        split = "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test")
        lines.append(json.dumps({"image": f"{i:03d}.png", "captions": [f"a {colour} square", f"one {colour} box"],
                                 "split": split}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def load_test(url: str, body: bytes, ctype: str, clients: int, n: int, check) -> dict:
    """``clients`` threads send requests until ``n`` are answered; returns requests/s and latency percentiles."""
    lat: list[float] = []
    lock = threading.Lock()
    left = [n]

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=300) as r:
                payload = json.loads(r.read())
                assert r.status == 200 and check(payload), payload
            with lock:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in lat)
    assert len(ms) == n, f"{len(ms)} of {n} requests answered"
    return {"requests_s": n / wall, "p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96, help="requests per (endpoint, clients) run")
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    args = ap.parse_args()
    from PIL import Image

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    tmp = Path(tempfile.mkdtemp(prefix="mb-bench-serve-"))
    png = tmp / "one.png"
    Image.new("RGB", (64, 64), (120, 40, 160)).save(png)
    py = [sys.executable, "-m", "modalbridge"]
    before = loadavg()
    rss = {"import torch": max_rss_mb([sys.executable, "-c", "import torch"], env)[0]}
    rss["draw"] = max_rss_mb(py + ["draw", "a red dress", "--out", str(tmp / "draw")], env)[0]
    rss["caption"] = max_rss_mb(py + ["caption", str(png)], env)[0]
    rss["classify"] = max_rss_mb(py + ["classify", "a red dress"], env)[0]
    rss["classify t2i-imagenet"] = max_rss_mb(py + ["classify", "a red dress", "--model", "t2i-imagenet"], env)[0]
    rss["train (sat_tiny, 2 epochs)"] = max_rss_mb(
        py + ["train", str(ROOT / "configs/caption/sat_tiny.yaml"), f"run_root={tmp / 'runs'}",
              f"data.data=folder:{shapes_dataset(tmp / 'data')}", f"data.cache_dir={tmp / 'cache'}",
              "trainer.max_epochs=2"], env)[0]

    port = free_port()
    server = subprocess.Popen(py + ["serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start: " + server.stdout.read1(4000).decode(errors="replace"))
        draw_body = json.dumps({"text": "a red dress", "n": 4, "seed": 0}).encode()
        cap_body, cap_type = multipart("image", "one.png", png.read_bytes())
        serve: dict = {}
        for c in args.clients:
            serve[f"draw, {c} clients"] = load_test(base + "/api/draw", draw_body, "application/json", c,
                                                    args.requests, lambda p: len(p.get("images", [])) == 4)
            serve[f"caption, {c} clients"] = load_test(base + "/api/caption", cap_body, cap_type, c, args.requests,
                                                       lambda p: isinstance(p.get("caption"), str) and p["caption"])
    finally:
        server.send_signal(2)  # SIGINT: graceful shutdown
        _, status, usage = os.wait4(server.pid, 0)
    rss["serve (after the load test)"] = usage.ru_maxrss / 1024
    after = loadavg()
    print(f"max RSS of each command as a fresh process (MB); load average before {before}, after {after}")
    for k, v in rss.items():
        print(f"  {k:30s} {v:7.0f} MB")
    print(f"serve (--workers 1), {args.requests} requests per run, every answer checked")
    for k, v in serve.items():
        print(f"  {k:20s} {v['requests_s']:6.1f} requests/s   p50 {v['p50_ms']:7.0f} ms   p95 {v['p95_ms']:7.0f} ms")
    report("serve_memory", max_rss_mb=rss, serve=serve, requests=args.requests, load_before=before,
           load_after=after)


if __name__ == "__main__":
    main()

"""JSON API of ``modalbridge serve``: a real uvicorn server on 127.0.0.1 (a free port) over tiny pipelines."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import requests
from PIL import Image

from modalbridge.app import server as srv
from modalbridge.errors import UserError

# --------------------------------------------------------------------------------------------- fixtures
LABELS = ["shirt", "trouser", "pullover", "dress", "coat", "sandal", "sneaker", "bag", "boot", "hat"]


def tiny_pipelines(tmp_dir: Path):
    """The real pipelines, loaded from tiny random model directories built here: text -> image = BERT (hidden 32) +
    in-span mapper over 10 classes + BigGAN-deep (16 px); image -> text = ResNet (32-d, 2x2 grid) + Show, Attend
    and Tell (hidden 32, vocab 99)."""
    import torch

    tmp_dir = Path(tmp_dir)
    torch.manual_seed(0)
    with mock.patch("torch.nn.init.orthogonal_", torch.nn.init.normal_):  # BigGAN's QR init: slow, not under test
        return _build_tiny(tmp_dir)


def _build_tiny(tmp_dir: Path):
    from transformers import BertConfig, BertModel, BertTokenizer, ResNetConfig, ResNetModel
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil

    from modalbridge import checkpoint
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.captioning.sat import SATConfig, ShowAttendTell
    from modalbridge.captioning.vocab import Vocab
    from modalbridge.generators.biggan import BigGAN, BigGANConfig
    from modalbridge.t2i.mapper import MapperConfig, T2IMapper
    from modalbridge.t2i.pipeline import load_drawer
    from modalbridge.t2i.vocabulary import VocabClass, Vocabulary

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "an", "the", "red", "blue", "on", "and", *LABELS]
    text_dir = tmp_dir / "bert"
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)).save_pretrained(text_dir)
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}, model_max_length=64).save_pretrained(text_dir)
    generator = BigGAN(BigGANConfig(output_dim=16, z_dim=32, class_embed_dim=32, channel_width=8, num_classes=10,
                                    layers=[(True, 16, 8), (False, 8, 4), (True, 4, 2), (False, 2, 1)],
                                    attention_layer_position=2))
    checkpoint.save(generator, tmp_dir / "generator")
    classes = Vocabulary([VocabClass(i, f"n{i:08d}", w, [w]) for i, w in enumerate(LABELS)], name="tiny")
    mapper = T2IMapper(MapperConfig(kind="inspan", text_hidden=32, embed_dim=32, num_classes=10, hidden=32,
                                    text_encoder=str(text_dir), generator=str(tmp_dir / "generator")),
                       table=generator.class_embeddings)
    checkpoint.save(mapper, tmp_dir / "t2i", vocab=classes.to_dict())

    image_dir = tmp_dir / "resnet"
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                             layer_type="basic")).save_pretrained(image_dir)
    ConvNextImageProcessorPil(size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(image_dir)
    vocab = Vocab([f"w{i}" for i in range(95)])
    decoder = ShowAttendTell(SATConfig(vocab_size=len(vocab), feature_dim=32, num_positions=4, embed_dim=32,
                                       hidden_dim=32, attention_dim=32, dropout=0.0, max_len=6,
                                       encoder=str(image_dir), encoder_kind="resnet"))
    checkpoint.save(decoder, tmp_dir / "captioner", vocab=vocab.to_dict())
    return load_drawer(tmp_dir / "t2i"), load_captioner(tmp_dir / "captioner")


def png_bytes(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


LIMITS = srv.Limits(max_upload_bytes=200_000, max_pixels=300 * 300, max_text_chars=100, max_images=4, max_beam=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def pipelines(model_dir):
    return tiny_pipelines(model_dir)


@pytest.fixture(scope="module")
def server(pipelines):
    with srv.private_upload_dir() as upload_dir, srv.running(srv.build_app(*pipelines, LIMITS)) as url:
        yield url, upload_dir


def post_image(url, data, beam=None, name="x.png"):
    fields = {"beam": str(beam)} if beam is not None else None
    return requests.post(f"{url}/api/caption", files={"image": (name, data, "image/png")}, data=fields, timeout=60)


# ------------------------------------------------------------------------------------------------ tests
def test_draw_returns_the_pipelines_images_as_png_and_top5_classes(server, pipelines):
    url, _ = server
    body = {"text": "a red shirt", "n": 2, "seed": 7, "truncation": 0.5}
    r = requests.post(f"{url}/api/draw", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"images", "classes"}
    images = [Image.open(io.BytesIO(base64.b64decode(s))) for s in out["images"]]
    assert [im.format for im in images] == ["PNG", "PNG"]
    direct = pipelines[0].draw("a red shirt", n=2, seed=7, truncation=0.5)
    for got, want in zip(images, direct.images, strict=True):
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want.convert("RGB")))
    assert len(out["classes"]) == 5
    assert all(set(c) == {"label", "wnid", "score"} and isinstance(c["score"], float) for c in out["classes"])
    other = requests.post(f"{url}/api/draw", json={**body, "seed": 8}, timeout=60).json()
    assert other["images"] != out["images"]


def test_caption_matches_the_library_and_leaves_no_file(server, pipelines):
    url, upload_dir = server
    r = post_image(url, png_bytes((40, 30)), beam=2)
    assert r.status_code == 200, r.text
    want = pipelines[1].caption([Image.new("RGB", (40, 30), (200, 30, 30))], beam=2)[0]
    assert want["caption"]
    assert r.json() == {"caption": want["caption"], "logprob": pytest.approx(float(want["logprob"]), abs=1e-4)}
    assert not [p for p in upload_dir.rglob("*") if p.is_file()]


def test_32_concurrent_captions_are_all_answered(server):
    url, _ = server
    data = png_bytes((48, 48))
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: post_image(url, data), range(32)))
    wall = time.perf_counter() - start
    assert [a.status_code for a in answers] == [200] * 32
    assert len({a.json()["caption"] for a in answers}) == 1
    print(f"32 concurrent /api/caption requests: {wall:.2f} s wall")


def _big_png() -> bytes:
    return png_bytes((400, 400))  # 160,000 pixels > LIMITS.max_pixels, but a few hundred bytes


@pytest.mark.parametrize(
    "route, kwargs, status",
    [
        ("draw", {"data": b"{not json"}, 400),
        ("draw", {"json": ["a", "list"]}, 400),
        ("draw", {"json": {"n": 2}}, 400),
        ("draw", {"json": {"text": "   "}}, 400),
        ("draw", {"json": {"text": "x" * 101}}, 413),
        ("draw", {"json": {"text": "a cat", "n": 0}}, 400),
        ("draw", {"json": {"text": "a cat", "n": 5}}, 400),
        ("draw", {"json": {"text": "a cat", "n": True}}, 400),
        ("draw", {"json": {"text": "a cat", "truncation": 2}}, 400),
        ("draw", {"json": {"text": "a cat", "seed": -1}}, 400),
        ("draw", {"json": {"text": "a cat", "colour": "red"}}, 400),
        ("draw", {"data": b"x" * 70_000}, 413),
        ("caption", {"files": {"image": ("x.png", b"not an image", "image/png")}}, 400),
        ("caption", {"files": {"image": ("x.png", b"", "image/png")}}, 400),
        ("caption", {"files": {"image": ("x.png", b"\x89PNG" + b"0" * 250_000, "image/png")}}, 413),
        ("caption", {"files": {"image": ("x.png", _big_png(), "image/png")}}, 413),
        ("caption", {"files": {"picture": ("x.png", png_bytes(), "image/png")}}, 400),
        ("caption", {"files": {"image": ("x.png", png_bytes(), "image/png")}, "data": {"beam": "0"}}, 400),
        ("caption", {"files": {"image": ("x.png", png_bytes(), "image/png")}, "data": {"beam": "six"}}, 400),
        ("caption", {"data": b"raw bytes", "headers": {"Content-Type": "image/png"}}, 415),
        (
            "caption",
            {"data": b"--b\r\nContent-Disposition: form-data; name=\"image\"",
             "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            400,
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_one_json_error(server, route, kwargs, status):
    url, _ = server
    r = requests.post(f"{url}/api/{route}", timeout=60, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "Traceback" not in r.text


def test_wrong_method_and_unknown_route_are_json(server):
    url, _ = server
    r = requests.get(f"{url}/api/draw", timeout=10)
    assert (r.status_code, set(r.json())) == (405, {"error"})
    r = requests.post(f"{url}/api/paint", json={}, timeout=10)
    assert (r.status_code, set(r.json())) == (404, {"error"})
    health = requests.get(f"{url}/api/health", timeout=10).json()
    assert health["ok"] and health["draw"] and health["caption"]


class _Blocking:
    """Wraps a captioner: the first call waits until ``release`` is set (holds the only worker)."""

    def __init__(self, inner):
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def caption(self, images, **kw):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.caption(images, **kw)


class _Broken:
    def caption(self, images, **kw):
        raise RuntimeError("secret internal detail /home/x")

    def draw(self, text, **kw):
        raise UserError("that text has no words the model knows")


def test_full_queue_answers_503_then_recovers(pipelines):
    blocking = _Blocking(pipelines[1])
    limits = srv.Limits(workers=1, queue=0, queue_timeout=5)
    with srv.running(srv.build_app(None, blocking, limits)) as url:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post_image, url, png_bytes())
            assert blocking.entered.wait(30)
            busy = post_image(url, png_bytes())
            assert busy.status_code == 503 and "queue is full" in busy.json()["error"]
            assert busy.headers["Retry-After"] == "1"
            no_drawer = requests.post(f"{url}/api/draw", json={"text": "a cat"}, timeout=10)
            assert no_drawer.status_code == 503 and set(no_drawer.json()) == {"error"}
            blocking.release.set()
            assert first.result().status_code == 200
        assert post_image(url, png_bytes()).status_code == 200


def test_unexpected_failure_is_a_json_500_without_traceback_and_user_errors_are_400():
    broken = _Broken()
    with srv.running(srv.build_app(broken, broken, srv.Limits())) as url:
        r = post_image(url, png_bytes())
        assert r.status_code == 500
        assert set(r.json()) == {"error"} and "RuntimeError" in r.json()["error"]
        assert "secret" not in r.text and "Traceback" not in r.text
        r = requests.post(f"{url}/api/draw", json={"text": "zzzz"}, timeout=10)
        assert r.status_code == 400 and r.json() == {"error": "that text has no words the model knows"}


def test_gate_bounds_running_and_waiting_calls():
    import anyio

    async def main():
        gate = srv.Gate("test", workers=2, queue=1, timeout=0.2)
        running, peak = 0, 0

        def work():
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            time.sleep(0.05)
            running -= 1
            return 1

        results = []

        async def call():
            try:
                results.append(await gate.run(work))
            except srv.Busy:
                results.append("busy")

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
        return results, peak, gate.pending

    results, peak, pending = anyio.run(main)
    assert sorted(results, key=str) == [1, 1, 1, "busy", "busy"]
    assert peak == 2 and pending == 0


def test_serve_command_passes_its_options(monkeypatch):
    from typer.testing import CliRunner

    from modalbridge.cli import app

    seen = {}
    monkeypatch.setattr(srv, "serve", lambda *a, **kw: seen.update(args=a, kw=kw))
    r = CliRunner().invoke(app, ["serve", "--port", "0", "--model-t2i", "t2i-dir", "--model-caption", "cap-dir",
                                 "--workers", "2", "--queue", "3", "--generator", "biggan-deep-256"])
    assert r.exit_code == 0, r.output
    host, port, t2i, cap, limits = seen["args"]
    assert (host, port, t2i, cap, limits.workers, limits.queue) == ("127.0.0.1", 0, "t2i-dir", "cap-dir", 2, 3)
    assert seen["kw"]["generator"] == "biggan-deep-256"


def test_serve_fails_with_one_error_line_when_the_port_is_taken():
    with srv.bind("127.0.0.1", 0) as taken:
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1"):
            srv.serve("127.0.0.1", taken.getsockname()[1])


def test_serve_loads_models_once_answers_and_stops_on_sigterm(pipelines, monkeypatch, tmp_path):
    """``serve`` in this (main) thread; a helper thread makes requests, then sends this process SIGTERM."""
    import os
    import signal
    import tempfile

    loads, lines, seen = [], [], {}
    monkeypatch.setattr(srv, "load_services", lambda *specs: loads.append(specs) or pipelines)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the private upload folder goes

    def client():
        try:
            deadline = time.monotonic() + 60
            while not lines and time.monotonic() < deadline:
                time.sleep(0.05)
            url = lines[0].split()[2]
            seen["draw"] = requests.post(f"{url}/api/draw", json={"text": "a red shirt", "n": 1}, timeout=30)
            seen["caption"] = post_image(url, png_bytes())
            seen["folders"] = list(tmp_path.glob("modalbridge-gradio-*"))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=client)
    helper.start()
    srv.serve("127.0.0.1", 0, "t2i-spec", "caption-spec", echo=lines.append)
    helper.join(10)
    assert loads == [("t2i-spec", "caption-spec", None)]  # once, at start-up; requests load nothing
    assert seen["draw"].status_code == 200 and seen["caption"].status_code == 200
    assert len(seen["folders"]) == 1 and not seen["folders"][0].exists()  # removed when the server stopped
    assert lines[-1] == "stopped"


def test_draw_model_and_generator_choices_are_names_from_the_allow_list(pipelines):
    """/api/draw's "model" and "generator": only the allow-listed names (never a path from the network); a chosen
    pair loads through the loader inside the draw gate; a pair that cannot load is the loader's one-line 400."""
    loaded = []

    def loader(model, generator):
        loaded.append((model, generator))
        if model == "t2i-imagenet" and generator is None:
            raise UserError("the resolver in t2i-imagenet has no generator of its own; pass --generator ...")
        return pipelines[0]

    choices = srv.DrawChoices(loader=loader)
    assert choices.models == ["t2i-fashion", "t2i-imagenet"]
    assert choices.generators == ["biggan-deep-128", "biggan-deep-256", "biggan-deep-512"]
    with srv.running(srv.build_app(pipelines[0], None, LIMITS, choices)) as url:
        def draw(**extra):
            return requests.post(f"{url}/api/draw", json={"text": "a red shirt", "n": 1, "seed": 3, **extra},
                                 timeout=60)

        for bad in ({"model": "/etc/passwd"}, {"model": "../t2i"}, {"generator": "/tmp/gen"},
                    {"generator": "biggan-deep-64"}, {"model": 3}, {"generator": ["biggan-deep-128"]}):
            r = draw(**bad)
            assert r.status_code == 400 and set(r.json()) == {"error"}, (bad, r.text)
        assert loaded == []  # nothing was loaded for a refused name
        assert "choose one of t2i-fashion, t2i-imagenet" in draw(model="x").json()["error"]
        own = draw(model="t2i-fashion")  # the server's own pair: its loaded pipeline, no load
        assert own.status_code == 200 and loaded == []
        r = draw(model="t2i-imagenet", generator="biggan-deep-256")
        assert r.status_code == 200, r.text
        assert len(r.json()["classes"]) == 5 and loaded == [("t2i-imagenet", "biggan-deep-256")]
        r = draw(model="t2i-imagenet")
        assert r.status_code == 400 and r.json()["error"].startswith("the resolver in t2i-imagenet has no generator")
        health = requests.get(f"{url}/api/health", timeout=10).json()
        assert health["models"] == choices.models and health["generators"] == choices.generators
        config = requests.get(f"{url}/config", timeout=10).text  # the Draw tab has both pickers
        assert '"draw-model"' in config and '"draw-generator"' in config
    with srv.running(srv.build_app(pipelines[0], None, LIMITS)) as url:  # no choices: only the server's own model
        r = requests.post(f"{url}/api/draw", json={"text": "a red shirt", "model": "t2i-fashion"}, timeout=60)
        assert r.status_code == 400 and "one model only" in r.json()["error"]
        assert requests.get(f"{url}/api/health", timeout=10).json()["models"] == []


def test_draw_choices_keep_the_servers_own_pair():
    choices = srv.DrawChoices(model="runs/resolver", generator="/models/biggan-128")
    assert choices.models == ["runs/resolver", "t2i-fashion", "t2i-imagenet"]  # the operator's own, by its spec
    assert choices.generators[0] == "/models/biggan-128"
    assert choices.resolve(None, None) is None and choices.resolve("runs/resolver", None) is None
    assert choices.resolve(None, "biggan-deep-512") == ("runs/resolver", "biggan-deep-512")
    assert choices.resolve("t2i-fashion", None) == ("t2i-fashion", None)
    with pytest.raises(srv.ApiError, match="unknown generator"):
        choices.resolve("t2i-imagenet", "/models/other")

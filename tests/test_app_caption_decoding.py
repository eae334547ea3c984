"""/api/caption's optional decoding fields (issue 13): ``length_penalty``, ``top_p``, ``temperature`` reach the
captioner like the CLI options; bad values are a JSON 400 naming the field, before any model work."""

from __future__ import annotations

import io

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from modalbridge.app import server as srv


class _Spy:
    """Wraps a captioner and records the keyword arguments of each call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def caption(self, images, **kw):
        self.calls.append(kw)
        return self.inner.caption(images, **kw)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from tiny import tiny_resnet

    from modalbridge import checkpoint
    from modalbridge.captioning.pipeline import load_captioner
    from modalbridge.captioning.sat import SATConfig, ShowAttendTell
    from modalbridge.captioning.vocab import Vocab

    tmp = tmp_path_factory.mktemp("api_decoding")
    vocab = Vocab(["a", "red", "square"])
    torch.manual_seed(0)
    model = ShowAttendTell(SATConfig(vocab_size=len(vocab), feature_dim=32, num_positions=4, embed_dim=8,
                                     hidden_dim=8, attention_dim=8, dropout=0.0, max_len=5,
                                     encoder=str(tiny_resnet(tmp / "enc")), encoder_kind="resnet"))
    checkpoint.save(model, tmp / "cap", vocab=vocab.to_dict())
    spy = _Spy(load_captioner(tmp / "cap"))
    app = FastAPI()
    srv.add_api(app, srv.Services(None, spy))
    with TestClient(app) as c:
        yield c, spy


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _post(c, **fields):
    return c.post("/api/caption", files={"image": ("x.png", _png(), "image/png")},
                  data={k: str(v) for k, v in fields.items()})


def test_decoding_fields_reach_the_captioner(client):
    c, spy = client
    r = _post(c, beam=4, length_penalty=0.5)
    assert r.status_code == 200, r.text
    assert spy.calls[-1] == {"beam": 4, "length_penalty": 0.5}
    r = _post(c, top_p=0.9, temperature=0.7)
    assert r.status_code == 200 and set(r.json()) == {"caption", "logprob"}, r.text
    assert spy.calls[-1] == {"top_p": 0.9, "temperature": 0.7}
    want = spy.inner.caption([Image.open(io.BytesIO(_png()))], top_p=0.9, temperature=0.7)[0]
    assert r.json()["caption"] == want["caption"]  # seeded: the same sample as the library's
    r = _post(c)
    assert r.status_code == 200 and spy.calls[-1] == {}


@pytest.mark.parametrize("fields,word", [
    ({"length_penalty": "abc"}, "'length_penalty' must be a number"),
    ({"length_penalty": "-1"}, "length penalty"),
    ({"top_p": "0"}, "top-p"),
    ({"top_p": "nan"}, "top-p"),
    ({"temperature": "99"}, "temperature"),
    ({"beam": "3", "top_p": "0.5"}, "exclude each other"),
    ({"length_penalty": "1", "temperature": "0.5"}, "beam search"),
])
def test_bad_decoding_fields_are_400_before_the_model_runs(client, fields, word):
    c, spy = client
    n = len(spy.calls)
    r = _post(c, **fields)
    assert r.status_code == 400 and word in r.json()["error"], r.text
    assert len(spy.calls) == n

"""Import structure: no import cycles, and model-family files never import upward (training, pipelines, app, CLI).

Read from the source with ``ast`` (function-local imports included), so it costs no import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# Model families, data readers and tokenizers: below training, pipelines, the app and the CLI.
MODEL_FILES = ["modalbridge.t2i.mapper", "modalbridge.t2i.resolver", "modalbridge.generators.biggan",
               "modalbridge.captioning.decoder", "modalbridge.captioning.sat", "modalbridge.captioning.clipcap",
               "modalbridge.captioning.decoding", "modalbridge.captioning.lm", "modalbridge.captioning.vocab",
               "modalbridge.captioning.word_vectors", "modalbridge.captioning.records",
               "modalbridge.captioning.datasets", "modalbridge.captioning.openclipart", "modalbridge.vision.encoders",
               "modalbridge.vision.preprocess", "modalbridge.vision.io", "modalbridge.t2i.vocabulary",
               "modalbridge.t2i.vocabularies", "modalbridge.training.discriminator", "modalbridge.text.encoders",
               "modalbridge.text.bert", "modalbridge.metrics.caption", "modalbridge.metrics.retrieval",
               "modalbridge.files", "modalbridge.errors", "modalbridge.shards", "modalbridge.config",
               "modalbridge.registry", "modalbridge.assets", "modalbridge.render", "modalbridge.words"]
# The bottom layer: generic helpers that every other module may use; they import only each other.
BOTTOM = {"modalbridge.errors", "modalbridge.files", "modalbridge.config", "modalbridge.registry",
          "modalbridge.words", "modalbridge.render", "modalbridge.shards", "modalbridge.threads"}
UPPER = ("modalbridge.training", "modalbridge.app", "modalbridge.cli", "modalbridge.t2i.pipeline",
         "modalbridge.t2i.classify", "modalbridge.captioning.pipeline", "modalbridge.t2i.train",
         "modalbridge.captioning.train")


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for p in (SRC / "modalbridge").rglob("*.py"):
        name = ".".join(p.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modalbridge"):
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, [sorted(c) for c in found]


def test_web_app_layers():
    """services <- ui, services <- server -> ui: the UI and the API share services and never import each other's
    routes; services know nothing of HTTP or Gradio."""
    graph = import_graph()
    assert "modalbridge.app.server" not in graph["modalbridge.app.ui"]
    assert not {"modalbridge.app.server", "modalbridge.app.ui"} & graph["modalbridge.app.services"]


def test_model_files_do_not_import_upward():
    graph = import_graph()
    bad = {m: sorted(t for t in graph[m] if t.startswith(UPPER)) for m in MODEL_FILES}
    assert not any(bad.values()), bad


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_bottom_layer_imports_only_itself():
    graph = import_graph()
    bad = {m: sorted(graph[m] - BOTTOM) for m in BOTTOM}
    assert not any(bad.values()), bad


def test_metrics_and_decoder_families_stand_alone():
    """Metrics read no model code (their tokenizer is ``modalbridge.words``); a decoder family never imports another
    (the protocol they share is ``captioning/decoder.py``)."""
    graph = import_graph()
    for m in ("modalbridge.metrics.caption", "modalbridge.metrics.retrieval"):
        assert not [t for t in graph[m] if t.startswith(("modalbridge.captioning", "modalbridge.t2i",
                                                         "modalbridge.vision", "modalbridge.training"))], m
    assert "modalbridge.captioning.sat" not in graph["modalbridge.captioning.clipcap"]
    assert "modalbridge.captioning.clipcap" not in graph["modalbridge.captioning.sat"]

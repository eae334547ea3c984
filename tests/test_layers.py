"""Import structure: no import cycles, and model-family files never import upward (training, pipelines, app, CLI).

Read from the source with ``ast`` (function-local imports included), so it costs no import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# Known cycle, to be removed by splitting the web app's services out of server.py (issue 10); nothing may join it.
MODEL_FILES = ["modalbridge.t2i.mapper", "modalbridge.t2i.resolver", "modalbridge.generators.biggan",
               "modalbridge.captioning.sat", "modalbridge.captioning.clipcap", "modalbridge.captioning.decoding",
               "modalbridge.text.encoders", "modalbridge.text.bert", "modalbridge.files", "modalbridge.errors",
               "modalbridge.shards", "modalbridge.config", "modalbridge.registry", "modalbridge.assets",
               "modalbridge.render"]
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

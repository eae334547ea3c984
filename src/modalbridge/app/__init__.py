"""Web demo (Gradio) and JSON API over the text -> image and image -> text pipelines: ``modalbridge serve``.

Layers: ``services`` (limits, checks, gates, the model services) <- ``ui`` (Gradio tabs) and ``server`` (FastAPI
routes, upload guard, server lifecycle; mounts the UI).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry or version check

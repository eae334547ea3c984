"""Web demo (Gradio) and JSON API over the text -> image and image -> text pipelines: ``modalbridge serve``.

Layers: ``services`` (limits, checks, gates, the model services) <- ``uploads`` (multipart parser, the guard in front
of Gradio's upload route, the private upload folder) and ``ui`` (Gradio tabs) <- ``server`` (FastAPI routes, server
lifecycle; mounts the UI).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry or version check

"""Web demo (Gradio) and JSON API over the text -> image and image -> text pipelines: ``modalbridge serve``."""

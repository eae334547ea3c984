"""Frozen text encoders (any HF AutoModel; offline MiniLM) that turn text into token hidden states."""

from modalbridge.text.encoders import TEXT_ENCODERS, EncodedText, TextEncoder, default_encoder_name, load_text_encoder

__all__ = ["TEXT_ENCODERS", "EncodedText", "TextEncoder", "default_encoder_name", "load_text_encoder"]

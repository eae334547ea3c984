"""Image -> text: caption datasets and formats, vocabulary, decoding (greedy, batched beam, top-p), decoders.

Submodules are imported on use (``from modalbridge.captioning import decoding``) so that reading a dataset does not
import torch-heavy decoder code.
"""

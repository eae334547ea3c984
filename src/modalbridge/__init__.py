"""modalbridge: small learned bridges between frozen pretrained language and image models."""

__version__ = "0.1.0"

from modalbridge.errors import UserError  # noqa: E402

__all__ = ["UserError", "__version__"]

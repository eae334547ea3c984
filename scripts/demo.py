"""`make demo`: runs the main jobs on the embedded offline defaults and prints where the outputs are."""

from __future__ import annotations

import sys


def main() -> int:
    print("modalbridge demo: nothing to run yet (the embedded default models are not built)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start (issue 14): the ``draw``/``caption``/``classify`` command paths import no training or UI stack.

Each check runs in a fresh interpreter (this process has long imported everything) and reads ``sys.modules``.
"""

import json
import subprocess
import sys

HEAVY = ["gradio", "lightning", "pytorch_lightning", "lightning_fabric", "mlflow", "wandb", "tensorboard",
         "tensorboardX", "torch.utils.tensorboard"]

# Everything the three commands import at module level or lazily on their way to a loaded model, without loading
# one: the CLI, the pipelines, the model families they register and the decoding helpers (not the training
# tasks such as training/gan.py: Lightning belongs to `train`).
IMPORTS = """
import json, sys
import modalbridge.cli as cli
from modalbridge.t2i import pipeline, classify
from modalbridge.generators import load_generator
from modalbridge.t2i import mapper, resolver
from modalbridge.captioning import pipeline as cap, decoding, vocab, sat, clipcap
from modalbridge.vision import encoders, io, classifier
from modalbridge.text import encoders as text_encoders
cli._quiet_hf()
"""

REPORT = "print(json.dumps({k: k in sys.modules for k in HEAVY + ['transformers']}))\n"


def _run(code: str, timeout: int = 300) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + code], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_command_modules_import_no_heavy_stack():
    (seen,) = _run(IMPORTS + REPORT)
    assert not [k for k in HEAVY if seen[k]], seen
    # transformers (seconds to import) waits until a model needs it: the default captioner does not.
    assert not seen["transformers"], seen


def test_caption_classify_and_draw_commands_import_no_heavy_stack(tmp_path):
    from PIL import Image

    png = tmp_path / "one.png"
    Image.new("RGB", (64, 64), (120, 40, 160)).save(png)
    run_cli = (
        "def run(*args):\n"
        "    sys.argv = ['modalbridge', *args]\n"
        "    try:\n"
        "        cli.main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        f"run('caption', {str(png)!r})\n" + REPORT + "run('classify', 'a dress')\n" + REPORT
        + f"run('draw', 'a dress', '--out', {str(tmp_path / 'draw')!r})\n" + REPORT
    )
    reports = _run("import json, sys\nimport modalbridge.cli as cli\n" + run_cli)
    assert len(reports) == 3
    assert not [k for r in reports for k in HEAVY if r[k]], reports
    # The default models load without transformers: the captioner's encoder is ours, MiniLM goes through text/bert.py
    assert not [r for r in reports if r["transformers"]], reports
    assert list((tmp_path / "draw").glob("*.png"))

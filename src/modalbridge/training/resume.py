"""What makes a run resumable and exact: weights-only training checkpoints, an atomic ``last.ckpt`` every epoch,
and a reseed at every epoch start, so a killed run continued with ``--resume`` matches the uninterrupted one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from modalbridge.errors import UserError


def epoch_seed_callback(seed: int):
    """A Lightning callback that reseeds torch at every epoch start from (seed, epoch): dropout and augmentation do
    not depend on history, so a run resumed from a checkpoint continues exactly as the uninterrupted run."""
    import lightning.pytorch as pl

    class EpochSeed(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            torch.manual_seed(seed * 100_003 + trainer.current_epoch)

    return EpochSeed()


def last_checkpoint_callback(dirpath: Path):
    """``checkpoints/last.ckpt`` after every completed epoch (unmonitored, overwritten in place): what --resume
    continues from. A ModelCheckpoint subclass, so its restored state never mixes with the ``best`` callback's."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class LastCheckpoint(ModelCheckpoint):
        def _save_checkpoint(self, trainer, filepath: str) -> None:
            # Write beside, then rename: a kill -9 at any moment leaves the previous or the new last.ckpt,
            # never a truncated one, so --resume always has a complete epoch to continue from.
            tmp = f"{filepath}.tmp"
            super()._save_checkpoint(trainer, tmp)
            if trainer.is_global_zero:
                os.replace(tmp, filepath)
            trainer.strategy.barrier()
            self._last_checkpoint_saved = filepath

    return LastCheckpoint(
        dirpath=dirpath, filename="last", monitor=None, save_top_k=1, every_n_epochs=1, save_last=False,
        auto_insert_metric_name=False, enable_version_counter=False,
    )


def load_training_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint loaded with ``torch.load(weights_only=True)``: tensors and plain containers only, so a
    planted pickle cannot run code. Corrupt, truncated, empty or foreign files give one UserError naming ``path``."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):
            raise UserError(f"refused to load {path}: it holds pickled Python objects, not just tensors "
                            "(loading it could run code)") from None
        raise UserError(f"refused to load {path}: not a weights-only PyTorch checkpoint (corrupt, or pickled "
                        "Python objects)") from None
    except Exception as e:  # noqa: BLE001 - EOFError (empty), RuntimeError (truncated zip), OSError, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"corrupt or truncated checkpoint {path}: {msg}") from None
    if not isinstance(state, dict) or not {"state_dict", "epoch", "global_step", "loops"} <= state.keys():
        raise UserError(f"{path} is not a Lightning training checkpoint (no state_dict/epoch/loops)")
    return state

"""ONE way to save and resume anything trained: atomic files, fingerprints, folder guards.

* `atomic_write` / `atomic_save` / `write_text`: a temporary file of this process and thread, fsync,
  then rename: a crash never leaves half a file and a failed write leaves nothing behind. Every
  file the package writes (checkpoints, results, ledgers, status files) goes through them.
* `resume(path, fingerprint)`: the state saved at `path`, None when there is none, and a one-line
  error when the file cannot be read or was written for another `fingerprint` (the configuration
  and data that trained it). `save(path, state, fingerprint)` stores the fingerprint with it.
* `Cadence`: when a long loop saves: every `every` steps and at least every `seconds` seconds,
  so a kill loses at most a minute of work.
* `check_config_folder`: a folder of checkpoints remembers the configuration that filled it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

import torch

SAVE_SECONDS = 60.0  # the most work (wall-clock) a kill may lose in a loop that uses `Cadence`


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """write(f) into a temporary file of this process and thread, fsync, then rename onto `path`: a crash never
    leaves half a file, two writers never share a temporary file, and a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save through `atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))


def write_text(path: str | os.PathLike, text: str) -> None:
    """A text file (results, ledgers, status) through `atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=1))


def data_fingerprint(x: torch.Tensor, y: torch.Tensor | None = None, length: int = 16) -> str:
    """sha256 (first `length` hex digits) of images and labels: what trained a checkpoint or a cache, what an
    upload ledger is keyed by."""
    h = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by `atomic_save`, or one line naming the file when it cannot be read (truncated,
    empty, not a checkpoint): delete it to restart from scratch."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # zip reader, unpickler and EOF errors all mean the same thing here
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "delete it to train again from scratch") from None


def resume(path: str | os.PathLike | None, fingerprint: dict | None,
           legacy: Callable[[dict], bool] | None = None) -> dict | None:
    """The state saved at `path` by `save` with this `fingerprint`; None when `path` is None or absent.
    A file written for another fingerprint, or without one, is refused in one line (never resumed).
    `legacy(state)`: accepts a checkpoint written before fingerprints (by what it did record)."""
    if path is None or not Path(path).exists():
        return None
    state = load_checkpoint(path)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} is not a training state; delete it to train again from scratch")
    saved = state.get("fingerprint")
    if saved is None and legacy is not None and legacy(state):
        return state
    if saved != fingerprint:
        what = "with another configuration or data" if saved is not None else "without a fingerprint (older code)"
        raise ValueError(f"checkpoint {path} was written {what}; delete it to train again, or use another folder")
    return state


def save(path: str | os.PathLike | None, state: dict, fingerprint: dict | None) -> None:
    """atomic_save(state + fingerprint) to `path` (nothing when `path` is None; the fingerprint may then be None)."""
    if path is not None:
        atomic_save({**state, "fingerprint": fingerprint}, path)


def _diverged(what: str, symptom: str, step: int, path: str | os.PathLike | None) -> FloatingPointError:
    kept = f"; the last good checkpoint {path} is kept" if path is not None and Path(path).exists() else ""
    return FloatingPointError(f"{what} diverged: {symptom} at step {step}{kept}. Lower the learning rate "
                              "or check the data")


def check_finite(loss: float, step: int, path: str | os.PathLike | None, what: str = "training") -> None:
    """Stop a loop whose loss is NaN or infinite, before anything is saved over the last good checkpoint."""
    if not math.isfinite(loss):
        raise _diverged(what, f"loss {loss}", step, path)


def check_finite_weights(model: torch.nn.Module, step: int, path: str | os.PathLike | None,
                         what: str = "training") -> None:
    """Refuse to save weights that hold NaN or infinity (a good checkpoint is never replaced by a bad one)."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise _diverged(what, "non-finite weights", step, path)


class Cadence:
    """Save every `every` steps (0: never by count) and whenever `seconds` have passed since the last save."""

    def __init__(self, every: int = 0, seconds: float = SAVE_SECONDS):
        self.every, self.seconds, self.last = every, seconds, time.monotonic()

    def due(self, step: int) -> bool:
        if (self.every and step % self.every == 0) or time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


def _with_defaults(saved: dict, defaults: dict) -> dict:
    """`saved` with the keys it lacks taken from `defaults`, recursively into nested sections."""
    out = dict(defaults)
    for k, v in saved.items():
        out[k] = _with_defaults(v, defaults[k]) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return out


def check_config_folder(folder: Path, fingerprint: dict, defaults: dict | None = None) -> None:
    """Refuse a checkpoint folder whose config.json differs from `fingerprint`; record it otherwise.
    A key missing from an older config.json, at any depth, is read as its value in `defaults` (if given)."""
    path = Path(folder) / "config.json"
    if path.exists():
        try:
            old = _with_defaults(json.loads(path.read_text()), defaults or {})
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} cannot be read ({type(e).__name__}); delete the folder's config.json "
                             "and its checkpoints to retrain") from None
        diff = sorted(k for k in fingerprint.keys() | old.keys() if fingerprint.get(k) != old.get(k))
        if diff:
            raise ValueError(f"{folder} holds models trained with another config (differs in {diff}); "
                             "use another folder (--out) or delete it to retrain")
        return
    write_json(path, fingerprint)

"""Writing a model folder so that a user's files are never lost and a half-written folder never looks valid.

:func:`write_folder` builds the folder under a hidden staging name beside OUTPUT_DIR and moves it into place in one
step. Rules:

* OUTPUT_DIR may not be, or contain, any of the inputs (the source checkpoint, its config, a reference file).
* An existing non-empty OUTPUT_DIR is replaced only with ``overwrite=True``, and only when it holds exactly what an
  earlier run of hyena-hf wrote there (listed in its manifest); anything else in it stops the run untouched.
* The swap is atomic where the OS allows it (Linux ``renameat2(RENAME_EXCHANGE)``): at every instant OUTPUT_DIR holds
  the complete old folder or the complete new one. Elsewhere the old folder is moved aside and the new one moved in
  with SIGINT held back in between.
* Staging folders that a killed run left behind (``.NAME.hyena-hf-staging-*``) are removed by the next run.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

MANIFEST = "hyena_hf_manifest.json"
_STAGING_TAG = ".hyena-hf-staging-"


class OutputFolderError(ValueError):
    """OUTPUT_DIR cannot be written without risking a user's files; the message says why in one line."""


def check_output_location(output_dir: Path, inputs: Iterable[Path | None]) -> Path:
    """Resolved OUTPUT_DIR, after refusing a file, or a folder that is or contains one of ``inputs``."""
    out = Path(output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"OUTPUT_DIR {output_dir} is a file, not a folder")
    for item in inputs:
        if item is None:
            continue
        resolved = Path(item).resolve()
        if resolved == out or out in resolved.parents:
            raise OutputFolderError(f"OUTPUT_DIR {output_dir} contains the input {item}: write to a new folder")
    return out


def _previous_output(out: Path) -> set[str]:
    """Names in ``out`` written by an earlier run (its manifest); refuses folders holding anything else."""
    manifest = out / MANIFEST
    try:
        listed = set(json.loads(manifest.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputFolderError(
            f"OUTPUT_DIR {out} is not empty and was not written by hyena-hf (no readable "
            f"{MANIFEST}): refusing to overwrite it; choose an empty or new folder"
        ) from None
    present = {p.name for p in out.iterdir()}
    foreign = sorted(present - listed - {MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise OutputFolderError(
            f"OUTPUT_DIR {out} holds files hyena-hf did not write ({shown}): refusing to "
            "overwrite; move them or choose another folder"
        )
    return present


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(staging: Path, out: Path) -> None:
    """Put ``staging`` at ``out``; afterwards ``staging`` holds the old folder (or nothing)."""
    if not out.exists():
        staging.rename(out)
        return
    if _exchange(staging, out):
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGING_TAG}old-", dir=out.parent))
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        out.rename(aside / "old")
        staging.rename(out)
        aside.rename(staging)
    finally:
        if main_thread:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _remove_stale_staging(out: Path) -> None:
    for stale in out.parent.glob(f".{out.name}{_STAGING_TAG}*"):
        shutil.rmtree(stale, ignore_errors=True)


def check_output(output_dir: str | Path, *, overwrite: bool = False, inputs: Iterable[Path | None] = ()) -> Path:
    """Every check :func:`write_folder` makes before writing (call it early, before expensive work)."""
    out = check_output_location(Path(output_dir), inputs)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputFolderError(
                f"OUTPUT_DIR {output_dir} exists and is not empty (pass --overwrite to replace "
                "an earlier hyena-hf output)"
            )
        _previous_output(out)
    return out


def write_folder(
    output_dir: str | Path,
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    inputs: Iterable[Path | None] = (),
) -> Path:
    """Run ``write(folder)`` into a staging folder and move it to OUTPUT_DIR under the rules of the module docstring.

    Returns the resolved OUTPUT_DIR. On any error (or interruption) OUTPUT_DIR is left as it was.
    """
    out = check_output(output_dir, overwrite=overwrite, inputs=inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{_STAGING_TAG}", dir=out.parent))
    try:
        write(staging)
        files = sorted(p.name for p in staging.iterdir())
        (staging / MANIFEST).write_text(json.dumps({"files": files}, indent=2))
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out

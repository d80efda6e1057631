"""Files the library writes and reads back: atomic writes, refusals to overwrite, checked model loading.

Every file keras_vae writes goes to a hidden temporary name in the same
folder and is `os.replace`d into place, so a crash or a kill -9 leaves either
the old file or the new one, never half of one (`atomic_path`). A `.keras`
file is loaded with `safe_mode=True` and every way it can be broken (not a
zip, truncated, garbage weights, an unregistered class, not a keras_vae
model) becomes one `ValueError` line naming the file (`load_vae`).

Example:

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "notes.txt"
>>> write_text(path, "hello\\n").read_text()
'hello\\n'
>>> refuse_existing([path], overwrite=False)
Traceback (most recent call last):
...
FileExistsError: .../notes.txt already exists; refusing to overwrite it. ...
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

PARTIAL = ".partial-"  # in the names of temporary files and folders


def partial_name(path) -> Path:
    """A hidden temporary name beside `path` that keeps its suffix (Keras and matplotlib read it).

    Example:

    >>> partial_name("runs/model.keras").suffix, partial_name("runs/model.keras").name.startswith(".model.partial-")
    ('.keras', True)
    """
    path = Path(path)
    return path.with_name(f".{path.stem}{PARTIAL}{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yields a temporary path to write; on success it is synced and `os.replace`d onto `path`.

    On an error the temporary file is removed and `path` is left as it was.

    Args:
        path: The file to write (its folder is created).

    Example:

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as temporary:
    ...     _ = temporary.write_text("done")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('done', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_name(path)
    try:
        yield temporary
        with open(temporary, "rb") as written:  # on disk before the rename, not only in the page cache
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path, text: str) -> Path:
    """Writes `text` to `path` atomically (`atomic_path`) and returns `path`."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return Path(path)


def write_json(path, value) -> Path:
    """Writes `value` as indented JSON to `path` atomically and returns `path`."""
    return write_text(path, json.dumps(value, indent=2) + "\n")


def remove_partials(folder, stem: str) -> list[Path]:
    """Removes leftovers of a killed write of `stem` in `folder` (`.STEM.partial-*`, `.STEM.old-*`).

    Returns:
        The paths removed.
    """
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for pattern in (f".{stem}{PARTIAL}*", f".{stem}.old-*"):
        for leftover in folder.glob(pattern):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def check_writable(folder, flag: str = "path") -> None:
    """Raises `PermissionError` unless a file can be created in `folder` (or its nearest existing parent).

    The probe is a temporary folder, removed at once, so a refused command
    leaves nothing behind.

    Args:
        folder: The folder a command will write into; it need not exist.
        flag: How the error names it, e.g. `"--out"`.
    """
    folder = Path(folder)
    parent = next(f for f in (folder, *folder.absolute().parents) if f.exists())
    try:
        tempfile.TemporaryDirectory(dir=parent, prefix=".keras_vae-probe-").cleanup()
    except OSError as error:
        raise PermissionError(f"{flag}={folder} cannot be written ({parent}: {error.strerror}).") from None


def refuse_existing(paths: Iterable, overwrite: bool, hint: str = "Choose another path or pass --overwrite.") -> None:
    """Raises `FileExistsError` naming every path of `paths` that exists, unless `overwrite`.

    Call it before any work, with every file the work will write.

    Args:
        paths: The files (or folders) to be written.
        overwrite: Allow replacing them.
        hint: The end of the message: what to do instead.
    """
    existing = [str(path) for path in map(Path, paths) if path.exists()]
    if existing and not overwrite:
        many = len(existing) > 1
        raise FileExistsError(f"{', '.join(existing)} already exist{'' if many else 's'}; refusing to overwrite "
                              f"{'them' if many else 'it'}. {hint}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_vae(path, flag: str = "--model"):
    """Loads a `.keras` file holding a `keras_vae.VAE` (any family), with `safe_mode=True`.

    Args:
        path: The `.keras` file.
        flag: What to call `path` in messages. Defaults to `"--model"`.

    Returns:
        The `VAE`.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not a `.keras` file, cannot be loaded (truncated,
            garbage, unregistered classes, code safe_mode refuses), or holds
            another kind of model; one line naming the file.

    Example:

    >>> load_vae("missing.keras")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No model file at --model=missing.keras
    """
    import keras

    from keras_vae.models.vae import VAE  # also registers every keras_vae class

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Expected a .keras file. Received: {flag}={path}")
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {flag}={path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a Keras model file: not a zip archive (truncated, empty or another format).")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - every failure of a user's file becomes one line naming it
        raise ValueError(f"Cannot load {path}: {_first_line(error)}") from None
    if not isinstance(model, VAE):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vae.VAE.")  # noqa: TRY004 - a bad file
    return model

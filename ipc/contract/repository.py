"""The layout of a model repository (``--model-dir``): which models and versions a folder holds.

Shared by the supervisor, which reads the versions when the pool starts and when it reloads
and pins them (a worker started later, by ``scale`` or to replace a lost one, loads exactly
those: never a version its peers do not serve), and the workers, which load them
(``worker.models.repository``). Only the file system is read here: no model is loaded.
"""

from __future__ import annotations

import os

from .formats import REPOSITORY_FILES as FILES
from .formats import SUFFIXES

#: The highest version: Triton's are int64.
MAX_VERSION = 2**63 - 1


class LayoutError(ValueError):
    """A repository laid out wrong; the message is one line for the user."""


def model_file(folder: str) -> str | None:
    """The model file in ``folder``, if it holds one."""
    return next((os.path.join(folder, file) for file in FILES if os.path.isfile(os.path.join(folder, file))), None)


def versions(folder: str) -> list[tuple[int, str]]:
    """``folder``'s version subfolders, (number, path), lowest first: Triton's versions, 1, 2,
    ... written without leading zeros (any other folder of digits is a one-line error)."""
    found = []
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry.isascii() and entry.isdigit() and os.path.isdir(path):
            if entry.startswith("0") or int(entry) > MAX_VERSION:
                raise LayoutError(f"{path}: a version folder is named 1 to {MAX_VERSION}, without leading zeros")
            found.append((int(entry), path))
    return sorted(found)


def model_files(name: str, folder: str) -> list[tuple[str, str]]:
    """The versions of model ``name`` in ``folder``, (version, its model file), lowest first:
    its file as version 1, or one per version folder; none for a folder of something else."""
    direct, numbered = model_file(folder), versions(folder)
    if direct and numbered:
        file = os.path.basename(direct)
        raise LayoutError(f"model {name!r}: {folder} holds both {file} and version folders; keep one")
    if direct is not None:
        return [("1", direct)]
    if not numbered:
        misnamed = sorted(entry for entry in os.listdir(folder) if entry.endswith(SUFFIXES))
        if misnamed:
            raise LayoutError(
                f"model {name!r}: {folder} holds {', '.join(misnamed)} but no {' or '.join(FILES)} "
                "(nor version folders 1, 2, ...)"
            )
        return []
    found = []
    for number, path in numbered:
        in_version = model_file(path)
        if in_version is None:
            raise LayoutError(f"model {name!r}: version folder {path} holds none of {', '.join(FILES)}")
        found.append((str(number), in_version))
    return found


def pinned_file(folder: str, name: str, version: str) -> str | None:
    """The model file of version ``version`` of model ``name`` in the repository ``folder``, if
    it is still there: only its own folder is looked at, whatever else the repository holds now."""
    model_folder = os.path.join(folder, name)
    version_folder = os.path.join(model_folder, version)
    if os.path.isdir(version_folder):
        return model_file(version_folder)
    return model_file(model_folder) if version == "1" else None


def models(folder: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """Every model of the repository ``folder``: (name, its folder, its versions' files)."""
    if not os.path.isdir(folder):
        raise LayoutError(f"model directory {folder} does not exist")
    found = []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub):
            try:
                name.encode("utf-8")  # a name os.listdir could not decode holds lone surrogates
            except UnicodeEncodeError:
                raise LayoutError(f"model folder {sub!r}: its name is not UTF-8") from None
            files = model_files(name, sub)
            if files:
                found.append((name, sub, files))
    if not found:
        raise LayoutError(
            f"model directory {folder} holds no model (a subfolder with {', '.join(FILES)}, "
            "or version folders 1, 2, ... holding one)"
        )
    return found


#: The most characters a pin may take: it travels in one control message (1 MiB at most).
MAX_PIN = 256 * 1024


def listing(folders: list[str]) -> list[str] | None:
    """Every model version the repositories hold, as ``NAME/VERSION``: what a pool pins; ``None``
    when there are too many to send in a control message (tens of thousands)."""
    found = [f"{name}/{version}" for folder in folders for name, _, files in models(folder) for version, _ in files]
    return found if sum(len(entry) + 4 for entry in found) <= MAX_PIN else None

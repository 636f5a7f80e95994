"""The model file formats a worker serves, declared once: every other place reads this table.

A model file is recognised by its suffix, both as ``--model NAME=path`` and in a repository,
where it is named ``model`` + suffix. The settings check (does the file exist?), the repository
reader (which file is the model?) and the worker's loader (which class loads it?) all read
:data:`FORMATS`; the loader refuses to import if a format here has no loader.

Besides these files, a repository may hold a ``model.txt`` naming a factory
(``package.module:Factory``): :data:`FACTORY_FILE`.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Format:
    #: What the loader knows it by.
    name: str
    #: The suffixes of its files, the first one the usual.
    suffixes: tuple[str, ...]
    #: Loading a file runs code it holds (a pickle): refused without ``--allow-pickle``.
    runs_code: bool
    #: The modules it needs beyond the core, and the extra that installs them.
    modules: tuple[str, ...] = ()
    extra: str | None = None

    @property
    def repository_files(self) -> tuple[str, ...]:
        """What a repository's model (or version) folder names such a file."""
        return tuple(f"model{suffix}" for suffix in self.suffixes)


FORMATS = (
    Format("npz", (".npz",), runs_code=False),
    Format("onnx", (".onnx",), runs_code=False, modules=("onnxruntime",), extra="onnx"),
    Format("skops", (".skops",), runs_code=False, modules=("sklearn", "skops"), extra="sklearn"),
    Format("pickle", (".joblib", ".pkl", ".pickle"), runs_code=True, modules=("sklearn",), extra="sklearn"),
)

#: Every suffix that names a model file.
SUFFIXES = tuple(suffix for format in FORMATS for suffix in format.suffixes)
#: A repository folder's file naming a factory instead of holding a model.
FACTORY_FILE = "model.txt"
#: The files a repository's model (or version) folder may hold, in the order they are looked for.
REPOSITORY_FILES = (*(file for format in FORMATS for file in format.repository_files), FACTORY_FILE)


def named(name: str) -> Format:
    """The format called ``name``."""
    return next(format for format in FORMATS if format.name == name)


def format_of(path: str) -> Format | None:
    """The format of the file at ``path``, by its suffix; ``None`` if it names none."""
    return next((format for format in FORMATS if path.endswith(format.suffixes)), None)


def install_hint(format: Format) -> str:
    """How to install what ``format`` needs, from anywhere and in a checkout."""
    packages = " ".join(_PACKAGES.get(module, module) for module in format.modules)
    return f"pip install {packages} (in a checkout: pip install '.[{format.extra}]')"


#: Modules whose package on PyPI is named otherwise.
_PACKAGES = {"sklearn": "scikit-learn"}


#: The formats that run no code as they load, by their usual suffix: what messages suggest.
SAFE = ", ".join(format.suffixes[0] for format in FORMATS if not format.runs_code)

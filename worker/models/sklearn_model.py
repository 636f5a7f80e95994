"""A scikit-learn estimator: ``--model NAME=model.skops`` (or ``.joblib``/``.pkl`` with
``--allow-pickle``), the sklearn extra.

A ``.skops`` file is loaded with skops' safe loader: only types skops trusts are built, and a
file holding any other is refused at load with those types named; ``--trust-type NAME`` trusts
one more (many tree models need ``sklearn.tree._tree.Tree``). Pickles (``.joblib``, ``.pkl``)
run code as they load, so they are refused unless the pool is started with ``--allow-pickle``.

The input is ``INPUT0`` ``[-1, n_features]`` (``n_features_in_``): FP64, or BYTES when the
estimator takes strings (it holds an encoder fitted on string categories: a pipeline with a
``OneHotEncoder``, say), every feature a string then (numbers too: ``"2.5"``, which scikit-learn's
numeric steps read back). The rows are handed over as a DataFrame with the estimator's column
names when it was fitted on one (and pandas is installed). ``OUTPUT0`` is ``predict``; ``OUTPUT1`` is ``predict_proba``
where the estimator has it (a classifier), FP64 ``[-1, n_classes]``. The datatype of ``OUTPUT0``
is what ``predict`` returns: INT64 for integer labels, BYTES for string labels, FP64 for a
regressor.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ipc.contract import formats

from .base import Model, ModelError, TensorSpec, as_text

INSTALL = formats.install_hint(formats.named("skops"))
#: The largest batch a request may carry (as the other models').
MAX_BATCH_SIZE = 1024
#: predict's output kinds (numpy's kind codes) and the datatype each is served as.
_KINDS = {"b": "BOOL", "i": "INT64", "u": "INT64", "f": "FP64", "U": "BYTES", "S": "BYTES", "O": "BYTES"}


def load_estimator(name: str, path: str, allow_pickle: bool, trusted: Sequence[str] = ()) -> Any:
    """The estimator in ``path``, loaded as safely as its format allows; ``trusted``: types a
    .skops file may hold beyond those skops trusts (``--trust-type``)."""
    base = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelError(f"model {name!r}: no such file {path}")
    format = formats.format_of(path)
    if format is not None and format.runs_code:
        if not allow_pickle:
            raise ModelError(
                f"model {name!r}: {base} is a pickle, and loading it runs whatever code it holds: "
                "start the pool with --allow-pickle if you trust it, or save the model with skops"
            )
        try:
            import joblib
        except ImportError:
            raise ModelError(f"model {name!r}: serving {base} needs scikit-learn: {INSTALL}") from None
        try:
            return joblib.load(path)
        except Exception as exc:  # whatever the pickle's code raised
            raise ModelError(f"model {name!r}: cannot load {base}: {type(exc).__name__}: {exc}") from None
    try:
        import skops.io
    except ImportError:
        raise ModelError(f"model {name!r}: serving {base} needs scikit-learn and skops: {INSTALL}") from None
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # skops' own errors for a file that is not one of its
        raise ModelError(f"model {name!r}: skops cannot read {path}: {exc}") from None
    untrusted = sorted(set(untrusted) - set(trusted))
    if untrusted:
        raise ModelError(
            f"model {name!r}: {base} holds types skops does not trust: {', '.join(untrusted)} "
            "(if you trust them, name each with --trust-type)"
        )
    return skops.io.load(path, trusted=list(trusted))


class SklearnModel(Model):
    platform = "sklearn"
    max_batch_size = MAX_BATCH_SIZE

    def __init__(
        self, name: str, path: str, allow_pickle: bool = False, trusted: Sequence[str] = (), version: str = "1"
    ) -> None:
        self.name = name
        self.version = version
        # scikit-learn warns on every call for what a client cannot change (feature names a
        # DataFrame had at fit time): not worth a log line per request.
        warnings.filterwarnings("ignore", category=UserWarning, module="sklearn")
        estimator = load_estimator(name, path, allow_pickle, trusted)
        if not hasattr(estimator, "predict") or not isinstance(getattr(estimator, "n_features_in_", None), int):
            raise ModelError(f"model {name!r}: {os.path.basename(path)} holds no fitted estimator with n_features_in_")
        self.estimator = estimator
        features = estimator.n_features_in_
        self._strings = takes_strings(estimator)
        #: The column names of the DataFrame the estimator was fitted on: it is given one (a
        #: column transformer may pick its columns by name), when pandas is installed; without
        #: it, one taking strings cannot be served, one taking numbers gets an array.
        self._columns: list[str] | None = None
        if getattr(estimator, "feature_names_in_", None) is not None:
            try:
                import pandas  # noqa: F401  (scikit-learn had it when the estimator was fitted)
            except ImportError:
                if self._strings:
                    raise ModelError(
                        f"model {name!r} was fitted on a DataFrame, and takes one: pip install pandas"
                    ) from None
            else:
                self._columns = [str(column) for column in estimator.feature_names_in_]
        found = getattr(estimator, "classes_", None)
        #: A single-output classifier's labels (a multi-output one has a list of arrays).
        classes = found if isinstance(found, np.ndarray) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # What predict returns, learnt from a row of zeros...
                zeros = np.zeros((1, features))
                trial = np.asarray(estimator.predict(self._rows(zeros.astype(bytes)) if self._strings else zeros))
                kind, rest = trial.dtype.kind, trial.shape[1:]
            except Exception:
                # ... or, for a model that takes no zeros (a log in its pipeline, an unknown
                # category), from its classes.
                kind, rest = (classes.dtype.kind if classes is not None else "f"), ()
        datatype = _KINDS.get(kind)
        if datatype is None:
            raise ModelError(
                f"model {name!r}: predict returns values of numpy kind {kind!r}, which this server cannot carry"
            )
        self.inputs = (TensorSpec("INPUT0", "BYTES" if self._strings else "FP64", (-1, features)),)
        outputs = [TensorSpec("OUTPUT0", datatype, (-1, *rest))]
        # predict_proba of a single-output classifier: one row of class probabilities per row. A
        # multi-output one answers a list of arrays, one per output: not served as OUTPUT1.
        self._proba = hasattr(estimator, "predict_proba") and classes is not None and not rest
        if classes is not None and self._proba:
            outputs.append(TensorSpec("OUTPUT1", "FP64", (-1, len(classes))))
        self.outputs = tuple(outputs)

    def predict(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = self._rows(inputs["INPUT0"])
        try:
            results = {"OUTPUT0": np.asarray(self.estimator.predict(x))}
            if self._proba:
                results["OUTPUT1"] = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        except ValueError as exc:  # scikit-learn's word for input it cannot take
            raise ModelError(str(exc).splitlines()[0]) from None
        return results

    def _rows(self, array: np.ndarray) -> Any:
        """INPUT0 as the estimator takes it: floats or strings, in a DataFrame when it was fitted
        on one."""
        if self._strings:
            rows = as_text(np.asarray(array, dtype=object), "INPUT0")
        else:
            rows = np.asarray(array, dtype=np.float64)
        if self._columns is None:
            return rows
        import pandas

        return pandas.DataFrame(rows, columns=self._columns)


def takes_strings(estimator: Any) -> bool:
    """Whether ``estimator`` holds an encoder fitted on string categories, in itself, a
    pipeline's steps, a column transformer's or a feature union's transformers."""
    categories = getattr(estimator, "categories_", None)
    if isinstance(categories, list) and any(np.asarray(c).dtype.kind in "OUS" for c in categories):
        return True
    for attribute in ("steps", "transformers_", "transformer_list"):
        for item in getattr(estimator, attribute, None) or []:
            if isinstance(item, tuple) and len(item) > 1 and takes_strings(item[1]):
                return True
    return False

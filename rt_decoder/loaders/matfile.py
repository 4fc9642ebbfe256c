"""Reading a MATLAB .mat file with every failure a one-line DataError.

Its own module so that the format readers (matlab, ziv, nelpy) all depend on it and not on each
other: `matlab.load_mat` dispatches to `ziv` and `nelpy`, which only need to read files.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError, where
from .common import quiet, reason


def read_mat(path: Path, whos: bool = False, **kwargs) -> dict:
    """scipy.io.loadmat (or only {variable name: MATLAB class}, `whos`) with every failure a one-line DataError."""
    import scipy.io

    try:
        with quiet():
            if whos:
                return {name: cls for name, _shape, cls in scipy.io.whosmat(str(path))}
            m = scipy.io.loadmat(str(path), **kwargs)
    except FileNotFoundError:
        raise DataError(where(path, "no such file")) from None
    except NotImplementedError:
        raise DataError(where(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save with save(..., '-v7')")) from None
    except Exception as e:  # scipy raises many types for a truncated or foreign file
        raise DataError(where(path, f"not a readable MATLAB .mat file ({reason(e)})")) from None
    return {k: v for k, v in m.items() if not k.startswith("__")}

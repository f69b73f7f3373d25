"""Read a model file written by ``torch.save`` without importing torch (a cold ``animate`` starts
~2 s sooner on a 2-core CPU when torch is never imported: :mod:`evp_anim.models.evp_numpy`).

``torch.save`` writes a zip archive: ``<name>/data.pkl``, a pickle of the saved object whose
tensors are references ("persistent ids") to raw little-endian storages ``<name>/data/<key>``,
plus ``<name>/byteorder``. Only what a model file holds is accepted, like ``torch.load(...,
weights_only=True)``: dicts, lists, tuples, strings, numbers and tensors of the common dtypes.
Anything else (a class from another module, code) is refused, so reading a file never runs code.

Tensors come back as read-only numpy arrays sharing nothing with the archive (copied out of it).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EvpError

# torch's storage classes (the pickle names them) and their numpy dtypes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
    """One storage of the archive: its raw data as a flat numpy array."""

    def __init__(self, data: np.ndarray):
        self.data = data


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_ignored) -> np.ndarray:
    """A tensor as numpy: ``size`` elements at element ``stride`` from ``offset`` in the storage."""
    flat = storage.data
    if len(size) == 0:
        return flat[offset:offset + 1].reshape(()).copy()
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    out = np.array(view)                       # a compact copy, independent of the archive
    out.setflags(write=False)
    return out


class _Unpickler(pickle.Unpickler):
    """The pickle of ``data.pkl`` with tensors rebuilt as numpy and nothing else allowed."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, little: bool):
        super().__init__(file)
        self._archive, self._prefix, self._little = archive, prefix, little
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name                        # the storage type, read by persistent_load
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a model file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unknown storage {storage_type!r}")
        if key not in self._storages:
            dtype = np.dtype(_STORAGE_DTYPES[storage_type]).newbyteorder("<" if self._little else ">")
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = _Storage(np.frombuffer(raw, dtype, count=int(numel)))
        return self._storages[key]


def read_torch_file(path: str | Path) -> Any:
    """The object ``torch.save`` wrote to ``path``, tensors as numpy arrays. A missing file,
    another format, or a pickle holding anything but data is a one-line :class:`EvpError`."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl")), None)
            if pkl is None:
                raise EvpError(f"{path}: not a readable model file (no data.pkl)")
            prefix = pkl[:-len("data.pkl")]
            order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
            return _Unpickler(io.BytesIO(archive.read(pkl)), archive, prefix, order.strip() == "little").load()
    except EvpError:
        raise
    except FileNotFoundError:
        raise EvpError(f"model file not found: {path}") from None
    except Exception as e:  # zipfile, pickle and numpy raise many types for damaged files
        raise EvpError(f"{path}: not a readable model file ({type(e).__name__})") from None

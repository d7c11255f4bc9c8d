"""Peak activation memory of eager PyTorch, for comparison with effc's memory plan.

``eager_peak_bytes(fn, *args)`` runs ``fn`` under a dispatch mode that sees every tensor each
torch op returns, and tracks the storages behind them: a storage counts from the first op
that returns it until it is freed (a weakref finalizer on the untyped storage), each storage
once however many views share it. Storages that existed before the call (the inputs, a
module's parameters and buffers) are not activations and are left out. CPython frees a
temporary as soon as its last reference goes, so the figure is what eager execution holds at
its worst moment, outputs included.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _key(storage: torch.UntypedStorage) -> int:
    return storage._cdata  # the StorageImpl's address: one key per storage, views included


class _LiveStorages(TorchDispatchMode):
    def __init__(self, existing: set[int]) -> None:
        super().__init__()
        self.existing = existing
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = _key(storage)
        if key in self.existing:
            return
        nbytes = storage.nbytes()
        old = self.sizes.get(key)
        if old is None:
            weakref.finalize(storage, self._free, key)
            self.sizes[key] = nbytes
            self.live += nbytes
        elif nbytes > old:     # resized in place (an out= op)
            self.sizes[key] = nbytes
            self.live += nbytes - old
        self.peak = max(self.peak, self.live)

    def _free(self, key: int) -> None:
        self.live -= self.sizes.pop(key, 0)


def _storages(objs: Any) -> set[int]:
    out: set[int] = set()
    for x in tree_leaves(objs):
        if isinstance(x, torch.nn.Module):
            out |= {_key(t.untyped_storage()) for t in (*x.parameters(), *x.buffers())}
        elif isinstance(x, torch.Tensor):
            out.add(_key(x.untyped_storage()))
    return out


def eager_peak_bytes(fn: Callable[..., Any], *args: Any) -> int:
    """Peak bytes of tensor storages created and alive at once while ``fn(*args)`` runs in
    eager PyTorch on CPU, without autograd; inputs and parameters are not counted."""
    existing = _storages([fn, list(args)])
    mode = _LiveStorages(existing)
    with torch.no_grad(), mode:
        result = fn(*args)
    del result
    return mode.peak

"""Contiguous parameter and gradient buffers for the training loop.

A flow has many small parameter tensors (a weight and a bias per subnet layer, ActNorm scales,
the summary network): 54 for a six-block affine cINN. On a CPU the optimizer step and the
gradient clipping then cost a few operations per tensor, which is a large share of a training
step at the batch sizes flows use. :class:`FlatParameters` moves every parameter into one
buffer per (device, dtype) and points each ``.grad`` at a slice of a matching gradient buffer,
so autograd accumulates straight into it; the optimizer and the clipping then see one tensor.
The arithmetic is unchanged: AdamW is elementwise, and the global norm is the norm of the
concatenated gradients either way.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["FlatParameters"]


class FlatParameters:
    """Share the storage of ``params`` with one flat buffer per (device, dtype).

    While active, ``flat`` holds one :class:`~torch.nn.Parameter` per group (hand these to the
    optimizer) whose ``.grad`` is the group's gradient buffer; every original parameter is a
    view of it and its ``.grad`` a view of the gradient buffer. Call :meth:`zero_grad` instead
    of ``optimizer.zero_grad()`` (setting the gradients to None would cut the views), and
    :meth:`release` at the end so that each parameter owns its storage again (safetensors, for
    one, refuses shared storage).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
        >>> flat = FlatParameters(net.parameters())
        >>> [p.numel() for p in flat.flat]
        [21]
        >>> net(torch.randn(5, 3)).sum().backward()
        >>> grad = flat.flat[0].grad
        >>> bool(grad.abs().sum() > 0), net[0].weight.grad.data_ptr() == grad.data_ptr()
        (True, True)
        >>> flat.release()
        >>> net[0].weight.grad is None
        True
    """

    def __init__(self, params: Iterable[nn.Parameter]) -> None:
        self.params = [p for p in params if p.requires_grad]
        groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in self.params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        self.flat: list[nn.Parameter] = []
        for (device, dtype), members in groups.items():
            size = sum(p.numel() for p in members)
            data = torch.empty(size, device=device, dtype=dtype)
            grad = torch.zeros(size, device=device, dtype=dtype)
            offset = 0
            for p in members:
                k = p.numel()
                data[offset : offset + k].copy_(p.detach().reshape(-1))
                p.data = data[offset : offset + k].view_as(p)
                p.grad = grad[offset : offset + k].view_as(p)
                offset += k
            flat = nn.Parameter(data)
            flat.grad = grad
            self.flat.append(flat)

    def zero_grad(self) -> None:
        """Zero every gradient buffer in place (one fill per group)."""
        for f in self.flat:
            if f.grad is not None:
                f.grad.zero_()

    def release(self) -> None:
        """Give every parameter its own storage again and drop the gradients."""
        for p in self.params:
            p.data = p.detach().clone()
            p.grad = None
        self.flat = []

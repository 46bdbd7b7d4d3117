"""Shared helpers for the flow tests."""

from __future__ import annotations

import torch


def jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of ``fn`` (maps one row to one row) at every row of ``x``, by autograd."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(fn, row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)

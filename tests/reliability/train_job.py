"""A small checkpointed training, run as a separate process by the SIGKILL test.

``python -m tests.reliability.train_job CHECKPOINT_DIR MODEL_DIR`` trains (resuming from
``CHECKPOINT_DIR`` when it holds a checkpoint), saves the model to ``MODEL_DIR`` and prints
``{"ran": [epochs run by this process], "epochs": [all epochs in the history]}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

import hepflow
from hepflow.training import History

EPOCHS = 6
FIT = {"epochs": EPOCHS, "batch_size": 64, "seed": 11, "progress": False}


def data(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(n, 2, generator=g)
    ctx = torch.cat([theta.sum(1, keepdim=True), theta[:, :1] - theta[:, 1:]], 1)
    return theta, ctx + 0.3 * torch.randn(n, 2, generator=g)


def model() -> torch.nn.Module:
    return hepflow.ConditionalINN(2, 2, depth=2, width=16, dequantize=[1], seed=0)


def train(checkpoint_dir: Path | None, ran: list[int]) -> tuple[torch.nn.Module, History]:
    """One thread, so that the result does not depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = model()
        history = hepflow.fit(
            m,
            *data(),
            checkpoint_dir=checkpoint_dir,
            resume=checkpoint_dir is not None,
            callback=lambda h: ran.append(h.epoch[-1]) and None,
            **FIT,
        )
    finally:
        torch.set_num_threads(threads)
    return m, history


if __name__ == "__main__":
    ran: list[int] = []
    trained, history = train(Path(sys.argv[1]), ran)
    hepflow.save_model(trained, sys.argv[2])
    print(json.dumps({"ran": ran, "epochs": history.epoch}))

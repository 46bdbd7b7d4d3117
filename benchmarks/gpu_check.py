"""GPU check: train the two analysis-shaped cINNs briefly on a device, check them against the CPU,
and print training and sampling throughput for hepflow (and zuko / FrEIA when installed).

Models (synthetic data of the analyses' shapes, so that nothing but torch is needed):

* ``neutrino``: p(3 parameters | 20 flat features + up to 10 jets x 4 features): flat MLP and
  attention-pooling set encoder, 7 spline couplings (the shipped [flow] and [summary] sizes);
* ``cosmic``: p(7 parameters | 43 scalars + a 9 x 100 Xmax histogram): MLP + 1D CNN, a box for two
  parameters and a simplex for five, 6 spline couplings.

For each: ``hepflow.fit`` on the device (throughput of the training epochs after the first),
then the trained weights on the CPU: the log-densities of the same validation batch on device and
CPU must agree (``max |diff|`` printed; the check fails above ``--atol``), and posterior sampling
throughput on both. Peers (``zuko`` NSF, FrEIA ``AllInOneBlock``) train the same flat problem when
importable. Exit status 1 when a check fails.

    python benchmarks/gpu_check.py                # device "auto": CUDA when present
    make gpu-check                                # the same, from the Makefile
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch

import hepflow
from hepflow.flows import Box, CNNSummary, Combined, MLPSummary, SetSummary, Simplex


def neutrino_like(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 3, generator=g)
    jets = torch.randn(n, 10, 4, generator=g)
    njet = torch.randint(4, 11, (n,), generator=g)
    mask = torch.arange(10)[None, :] < njet[:, None]
    jets = jets * mask[..., None]
    flat = torch.randn(n, 20, generator=g)
    flat[:, :3] += theta  # the MET-like features carry the parameters
    flat[:, 3] = theta[:, 0] * theta[:, 1] + 0.3 * torch.randn(n, generator=g)
    model = hepflow.ConditionalINN(
        3,
        summary=Combined(
            flat=MLPSummary(20, 32, width=64), jets=SetSummary(4, 32, width=64, heads=4, blocks=1)
        ),
        depth=7,
        width=96,
        bins=10,
        bound=4.0,
        seed=seed,
    )
    return theta, {"flat": flat, "jets": jets, "mask": mask}, model


def cosmic_like(n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    g = torch.Generator().manual_seed(seed)
    box = torch.rand(n, 2, generator=g) * torch.tensor([6.0, 2.0]) + torch.tensor([-3.0, 17.5])
    fractions = torch.distributions.Dirichlet(torch.ones(5)).sample((n,))
    theta = torch.cat([box, fractions], 1)
    centre = 700 + 20 * box[:, :1] + 60 * fractions[:, :1]
    grid = torch.linspace(500, 1100, 100)
    xmax = torch.exp(-0.5 * ((grid[None, :] - centre) / 40) ** 2)[:, None, :].repeat(1, 9, 1)
    xmax = xmax + 0.05 * torch.rand(n, 9, 100, generator=g)
    flat = torch.cat([theta, torch.randn(n, 36, generator=g)], 1)
    model = hepflow.ConditionalINN(
        7,
        summary=Combined(
            flat=MLPSummary(43, 32, width=64, layers=2),
            xmax=CNNSummary((100,), 32, channels=(16, 32), in_channels=9, width=64),
        ),
        depth=6,
        width=128,
        bins=8,
        constraints=[Box([0, 1], low=[-3.0, 17.5], high=[3.0, 19.5]), Simplex([2, 3, 4, 5, 6])],
        seed=seed,
    )
    return theta, {"flat": flat, "xmax": xmax}, model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sampling_rate(model: Any, context: dict[str, torch.Tensor], samples: int, device: torch.device) -> float:
    ctx = {k: v.to(device) for k, v in context.items()}
    model = model.to(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    model.sample(8, {k: v[:2] for k, v in ctx.items()}, generator=gen)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    model.sample(samples, ctx, generator=gen)
    _sync(device)
    return len(next(iter(ctx.values()))) * samples / (time.perf_counter() - t0)


def check(name: str, build: Any, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    theta, context, model = build(args.n, args.seed)
    epoch_s: list[float] = []
    t_last = [time.perf_counter()]

    def timer(_: Any) -> None:
        _sync(device)
        now = time.perf_counter()
        epoch_s.append(now - t_last[0])
        t_last[0] = now

    history = hepflow.fit(
        model,
        theta,
        context,
        epochs=args.epochs,
        batch_size=args.batch,
        device=str(device),
        seed=args.seed,
        progress=False,
        patience=None,
        callback=timer,
    )
    n_train = round(len(theta) * 0.9)
    steady = epoch_s[1:] or epoch_s
    train_rate = n_train / (sum(steady) / len(steady))
    # the same weights on both devices: log-densities of one validation batch
    val_theta = theta[-256:]
    val_ctx = {k: v[-256:] for k, v in context.items()}
    model.eval()
    with torch.no_grad():
        on_device = model.to(device).log_prob(
            val_theta.to(device), {k: v.to(device) for k, v in val_ctx.items()}
        )
        on_cpu = model.to("cpu").log_prob(val_theta, val_ctx)
    diff = float((on_device.double().cpu() - on_cpu.double()).abs().max())
    obs = {k: v[:64] for k, v in context.items()}
    return {
        "model": name,
        "device": str(device),
        "val_nll": float(history.val_loss[-1]),
        "train_samples_per_s": train_rate,
        "sample_per_s_device": _sampling_rate(model, obs, args.samples, device),
        "sample_per_s_cpu": _sampling_rate(model, obs, max(args.samples // 8, 8), torch.device("cpu")),
        "max_abs_logp_diff": diff,
        "ok": math.isfinite(diff) and diff <= args.atol and math.isfinite(history.val_loss[-1]),
    }


def peers(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Training and sampling throughput of zuko and FrEIA on a flat 3 | 20 problem, when installed."""
    lines = []
    g = torch.Generator().manual_seed(args.seed)
    theta = torch.randn(args.n, 3, generator=g).to(device)
    ctx = torch.randn(args.n, 20, generator=g).to(device) + theta.repeat(1, 7)[:, :20]
    try:
        import zuko

        flow = zuko.flows.NSF(3, 20, transforms=7, hidden_features=(96, 96)).to(device)
        lines.append(
            _peer_rate(
                "zuko NSF",
                flow,
                lambda b, c: -flow(c).log_prob(b).mean(),
                lambda c, k: flow(c).sample((k,)),
                theta,
                ctx,
                args,
                device,
            )
        )
    except ImportError:
        lines.append("zuko: not installed")
    try:
        import FrEIA.framework as ff
        import FrEIA.modules as fm

        def subnet(i: int, o: int) -> torch.nn.Module:
            return torch.nn.Sequential(torch.nn.Linear(i, 96), torch.nn.ReLU(), torch.nn.Linear(96, o))

        inn = ff.SequenceINN(3)
        for _ in range(7):
            inn.append(fm.AllInOneBlock, cond=0, cond_shape=(20,), subnet_constructor=subnet)
        inn = inn.to(device)

        def loss(b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            z, ljd = inn(b, c=[c])
            return (0.5 * (z**2).sum(1) - ljd).mean()

        def sample(c: torch.Tensor, k: int) -> torch.Tensor:
            z = torch.randn(len(c) * k, 3, device=device)
            return inn(z, c=[c.repeat_interleave(k, 0)], rev=True)[0]

        lines.append(_peer_rate("FrEIA AllInOne", inn, loss, sample, theta, ctx, args, device))
    except ImportError:
        lines.append("FrEIA: not installed")
    return lines


def _peer_rate(
    name: str, module: Any, loss: Any, sample: Any, theta: Any, ctx: Any, args: Any, device: Any
) -> str:
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    for _ in range(2):  # the second epoch is timed
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, len(theta), args.batch):
            opt.zero_grad()
            loss(theta[i : i + args.batch], ctx[i : i + args.batch]).backward()
            opt.step()
        _sync(device)
        rate = len(theta) / (time.perf_counter() - t0)
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        sample(ctx[:64], args.samples)
        _sync(device)
        srate = 64 * args.samples / (time.perf_counter() - t0)
    return f"{name:<16} train {rate:>12.0f} samples/s   sample {srate:>12.0f} samples/s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GPU check of hepflow's two analysis-shaped cINNs")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    p.add_argument("--n", type=int, default=50_000, help="training events per model")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--samples", type=int, default=4096, help="posterior samples per observation")
    p.add_argument("--atol", type=float, default=1e-3, help="largest |log p(device) - log p(cpu)|")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-peers", dest="peers", action="store_false")
    args = p.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"hepflow {hepflow.__version__}, torch {torch.__version__}, device {device} ({name})")
    rows = [check(n, b, args, device) for n, b in (("neutrino", neutrino_like), ("cosmic", cosmic_like))]
    print(
        f"{'model':<9} {'val NLL':>8} {'train/s':>10} {'sample/s dev':>13} {'sample/s cpu':>13} "
        f"{'|dlogp|':>9}  check"
    )
    for r in rows:
        print(
            f"{r['model']:<9} {r['val_nll']:>8.3f} {r['train_samples_per_s']:>10.0f} "
            f"{r['sample_per_s_device']:>13.0f} {r['sample_per_s_cpu']:>13.0f} "
            f"{r['max_abs_logp_diff']:>9.2e}  {'ok' if r['ok'] else 'FAILED'}"
        )
    if args.peers:
        for line in peers(args, device):
            print(line)
    failed = [r["model"] for r in rows if not r["ok"]]
    print("GPU check: " + ("all checks passed" if not failed else f"FAILED for {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Maximum-likelihood training loop for any model with a ``training_loss(theta, context)`` method.

The loop keeps the whole data set in memory as tensors on the training device and batches by
indexing with a random permutation (no per-sample Python work, no DataLoader). It uses AdamW
(fused kernels where available) with a warmup + cosine (or one-cycle) learning-rate schedule,
gradient-norm clipping, early stopping on the validation loss with the best weights restored,
optional mixed precision (the flows keep their log-det math in fp32) and optional
``torch.compile``. With ``checkpoint_dir`` it writes a checkpoint after every epoch and
``resume=True`` continues an interrupted run exactly where it stopped.

Per-event weights (generator weights, negative ones included) travel with the events through
the split, the shuffling and the batches; see :func:`fit` for the normalisation of the loss.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hepflow.config import FRACTION, NON_NEGATIVE, POSITIVE, Bound
from hepflow.errors import ConfigError, InputError, ModelError
from hepflow.flows.context import as_tensor, batch_size_of, index_context
from hepflow.training.checkpoint import (
    CHECKPOINT_NAME,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from hepflow.training.flat import FlatParameters
from hepflow.training.history import History

__all__ = ["fit", "resolve_device"]

log = logging.getLogger(__name__)

_SCHEDULES = ("cosine", "onecycle", "constant")
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available here")
    return dev


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    if precision not in _PRECISIONS:
        raise ConfigError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _convert(model: nn.Module, theta: Any, context: Any) -> tuple[Tensor, Any]:
    if hasattr(model, "_theta") and hasattr(model, "_context"):
        t = model._theta(theta)
        c = model._context(context)
        if c is not None and not (isinstance(context, Mapping)):
            c = c["context"]  # keep plain-tensor contexts plain
    else:
        t = as_tensor(theta, dtype=torch.float32)
        c = None
        if context is not None:
            c = (
                {k: as_tensor(v, dtype=torch.float32) for k, v in context.items()}
                if isinstance(context, Mapping)
                else as_tensor(context, dtype=torch.float32)
            )
    t = t.detach().cpu()
    if c is not None:
        c = {k: v.detach().cpu() for k, v in c.items()} if isinstance(c, Mapping) else c.detach().cpu()
        if batch_size_of(c) != t.shape[0]:
            raise InputError(f"theta has {t.shape[0]} events but the context has {batch_size_of(c)}")
    _check_finite("theta", t)
    if isinstance(c, Mapping):
        for k, v in c.items():
            _check_finite(f"context[{k!r}]", v)
    elif c is not None:
        _check_finite("context", c)
    return t, c


def _check_weights(weights: Any, n: int) -> Tensor:
    """Per-event weights as a float64 CPU tensor ``(n,)``; refuse what cannot weight a loss."""
    try:
        w = as_tensor(weights).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"weights must be a numeric array of shape ({n},): {err}") from err
    if w.dtype == torch.bool or w.dtype.is_complex:
        raise InputError(f"weights must be real numbers, got dtype {w.dtype}")
    w = w.to(torch.float64)
    if w.dim() != 1:
        raise InputError(f"weights must have shape ({n},), got {tuple(w.shape)}")
    if w.shape[0] != n:
        raise InputError(f"weights has {w.shape[0]} entries but theta has {n} events")
    bad = ~torch.isfinite(w)
    if bool(bad.any()):
        raise InputError(
            f"weights has NaN or inf in {int(bad.sum())} event(s), e.g. row {int(bad.nonzero()[0, 0])}"
        )
    if n and not bool((w != 0).any()):
        raise InputError("weights are all zero")
    total = float(w.sum())
    if not total > 0:
        raise InputError(f"weights sum to {total:.6g}; the total weight must be positive")
    return w


def _unit_mean(w: Tensor, what: str) -> Tensor:
    """``w`` divided by its mean (float32): a weighted mean of ``x`` is then ``mean(w * x)``."""
    total = float(w.sum())
    if not total > 0:
        raise InputError(
            f"the weights of the {what} events sum to {total:.6g}; the total weight must be positive "
            f"(too many negative weights in the split: use more events or another seed)"
        )
    return (w * (w.shape[0] / total)).to(torch.float32)


def _accepts_weights(model: nn.Module) -> bool:
    try:
        params = inspect.signature(model.training_loss).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return "weights" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_finite(name: str, x: Tensor) -> None:
    if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x)).reshape(x.shape[0], -1).any(1)
        raise InputError(
            f"{name} has NaN or inf in {int(bad.sum())} event(s), e.g. row {int(bad.nonzero()[0, 0])}"
        )


def _to(c: Any, device: torch.device) -> Any:
    if c is None:
        return None
    if isinstance(c, Mapping):
        return {k: v.to(device) for k, v in c.items()}
    return c.to(device)


def _lr_lambda(schedule: str, total: int, warmup: int) -> Callable[[int], float]:
    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))

    def constant(step: int) -> float:
        return min(1.0, (step + 1) / warmup) if warmup else 1.0

    return cosine if schedule == "cosine" else constant


def _make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - old torch or exotic dtype
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)  # pragma: no cover


def _clip(params: list[nn.Parameter], max_norm: float) -> Tensor:
    """Clip the global gradient norm to ``max_norm``; returns the norm before clipping.

    One concatenation and one norm instead of a norm per parameter (CPU has no multi-tensor
    norm kernel); the rescaling is skipped when nothing needs clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    flat = grads[0].reshape(-1) if len(grads) == 1 else torch.cat([g.reshape(-1) for g in grads])
    total = torch.linalg.vector_norm(flat.float())
    coef = max_norm / (total + 1e-6)
    if grads[0].device.type == "cpu":
        if float(coef) < 1.0:  # no synchronisation cost on CPU
            torch._foreach_mul_(grads, coef.to(grads[0].dtype))
    else:
        torch._foreach_mul_(grads, coef.clamp(max=1.0).to(grads[0].dtype))
    return total


def fit(
    model: nn.Module,
    theta: Any,
    context: Any = None,
    *,
    weights: Any = None,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    schedule: str = "cosine",
    warmup: float = 0.05,
    clip_grad: float | None = 10.0,
    validation_split: float = 0.1,
    validation: tuple[Any, ...] | None = None,
    patience: int | None = 10,
    restore_best: bool = True,
    device: str | torch.device = "auto",
    precision: str = "auto",
    compile: bool = False,
    seed: int | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    output_dir: str | Path | None = None,
    progress: bool | None = None,
    callback: Callable[[History], bool | None] | None = None,
) -> History:
    """Train ``model`` by minimising ``model.training_loss(theta, context)``; return the history.

    Arguments:
        model: any module with ``training_loss(theta, context) -> scalar`` (a
            :class:`~hepflow.flows.inn.ConditionalINN`: mean negative log-likelihood; a
            :class:`~hepflow.flows.regression.Regressor`: mean squared error). If it has a
            ``prepare(theta, context)`` method it is called on the training split first
            (standardisation buffers, ActNorm initialisation).
        theta: parameters ``(n, theta_dim)``, tensor or numpy array.
        context: observations ``(n, ...)``: a tensor/array, a dict of them, or None.

    Keyword arguments:
        weights: per-event weights ``(n,)`` (tensor or array; e.g. NanoAOD ``genWeight``), or
            None for unweighted training. The loss then estimates the weighted mean
            ``sum_i w_i loss_i / sum_i w_i`` of the per-event loss (NLL for a flow, squared error
            for a :class:`~hepflow.flows.regression.Regressor`); the model's
            ``training_loss(theta, context, weights)`` must accept them. Negative weights (NLO
            generators) are allowed; the weights must be finite, not all zero, and sum to a
            positive total (:class:`~hepflow.errors.InputError` otherwise), and so must the
            weights of the training and of the validation split. Normalisation: the weights are
            divided by the mean weight of the training split (of the validation set for the
            validation loss), once, before training, and a batch's loss is
            ``mean_batch(w_i loss_i)``, i.e. ``sum_batch(w_i loss_i) / (batch_size * mean w)``.
            Every batch is thus an unbiased estimate of the weighted mean over the training set,
            and its gradient an unbiased estimate of the full weighted gradient, whatever the
            batch's own weights: dividing by the batch's own weight sum instead would be biased
            and unstable (that sum can be tiny or negative with negative weights). The
            epoch's ``train_loss`` is exactly the weighted mean over the training set, and
            ``val_loss`` over the validation set. Note that a flow trained with negative
            weights needs a weighted distribution that is non-negative everywhere, as any
            density estimate does. The standardisation and ActNorm initialisation
            (``prepare``) use the unweighted training events; with ``weights=None`` training
            is exactly as without the option.
        epochs, batch_size, lr, weight_decay: the usual; AdamW.
        schedule: ``"cosine"`` (linear warmup, cosine decay to 1% of ``lr``), ``"onecycle"``
            (:class:`torch.optim.lr_scheduler.OneCycleLR`) or ``"constant"`` (after warmup).
        warmup: fraction of the steps used for the warmup.
        clip_grad: maximum global gradient norm (None: no clipping).
        validation_split: fraction of the events held out (random, reproducible with ``seed``).
        validation: an explicit ``(theta_val, context_val)`` or, weighted,
            ``(theta_val, context_val, weights_val)`` instead of the split (without weights
            the validation loss is unweighted).
        patience: stop after this many epochs without a better validation loss (None: never);
            with ``restore_best`` the best weights are put back at the end.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 or fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"bf16"``
            (also on CPUs with bf16 support), ``"fp16"``.
        compile: wrap the loss in :func:`torch.compile`.
        seed: seed of the split, the batch order and the dequantization noise (default: drawn
            from torch's global generator, so ``torch.manual_seed`` makes runs repeatable).
        checkpoint_dir: write ``checkpoint.pt`` there after every epoch (atomically).
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
        output_dir: write ``history.json`` and ``loss.png`` there at the end.
        progress: tqdm bar with running losses (default: when stderr is a terminal).
        callback: called with the history after each epoch (and checkpoint); returning True
            stops training.

    Example:
        >>> import torch, hepflow
        >>> theta = torch.randn(512, 2)
        >>> context = theta.sum(1, keepdim=True) + 0.1 * torch.randn(512, 1)
        >>> model = hepflow.ConditionalINN(theta_dim=2, context_dim=1, depth=2, width=16)
        >>> history = hepflow.fit(model, theta, context, epochs=2, progress=False)
        >>> len(history.train_loss)
        2

        Weighted, with some negative weights:

        >>> w = torch.where(torch.rand(512) < 0.1, -1.0, 1.0)
        >>> history = hepflow.fit(model, theta, context, weights=w, epochs=1, progress=False)
        >>> len(history.train_loss)
        1
    """
    if not hasattr(model, "training_loss"):
        raise ConfigError(
            f"fit needs a model with a training_loss(theta, context) method, got {type(model).__name__}"
        )
    if epochs < 0 or batch_size < 1:
        raise ConfigError(
            f"need epochs >= 0 and batch_size >= 1, got epochs={epochs}, batch_size={batch_size}"
        )
    if schedule not in _SCHEDULES:
        raise ConfigError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split}")
    _check_options(lr=(lr, POSITIVE), weight_decay=(weight_decay, NON_NEGATIVE), warmup=(warmup, FRACTION))
    if clip_grad is not None:
        _check_options(clip_grad=(clip_grad, POSITIVE))
    if resume and checkpoint_dir is None:
        raise ConfigError("resume=True needs checkpoint_dir")
    if validation is not None and len(validation) not in (2, 3):
        raise ConfigError(
            f"validation must be (theta, context) or (theta, context, weights), got {len(validation)} items"
        )
    weighted = weights is not None or (validation is not None and len(validation) == 3)
    if weighted and not _accepts_weights(model):
        raise ConfigError(
            f"weights need a model whose training_loss accepts weights=, {type(model).__name__}'s does not"
        )
    dev = resolve_device(device)
    amp_dtype = _resolve_precision(precision, dev)
    model.to(dev)

    theta_t, ctx = _convert(model, theta, context)
    n = theta_t.shape[0]
    if ctx is not None:  # what the model is trained on, saved with it (hepflow.posterior.shift)
        from hepflow.posterior.shift import model_summary

        model.training_summary = model_summary(model, ctx)
    w = None if weights is None else _check_weights(weights, n)
    w_info = None if w is None else {"sum": float(w.sum()), "sum2": float((w * w).sum())}

    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    # read on the CPU: the RNG states must stay CPU tensors; load_state_dict moves the rest
    ckpt = load_checkpoint(ckpt_path, map_location="cpu") if resume and ckpt_path.is_file() else None
    if ckpt is not None:
        _check_checkpoint(ckpt, ckpt_path, seed=seed, n=n, epochs=epochs, w_info=w_info)
        seed = int(ckpt["fit"]["seed"])
    elif seed is None:
        seed = int(torch.randint(2**62, ()).item())
    gen = torch.Generator().manual_seed(seed)
    # all training randomness (dequantization noise, dropout, ActNorm's first batch) comes from
    # torch's global generator, forked and seeded here: the same seed gives the same run, and the
    # caller's generator state is left as it was
    rng_fork = contextlib.ExitStack()
    rng_fork.enter_context(torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []))
    torch.manual_seed(seed ^ 0x7A11)
    try:
        return _fit(
            model,
            theta_t,
            ctx,
            w,
            w_info,
            n,
            gen,
            seed,
            ckpt,
            ckpt_path,
            dev,
            amp_dtype,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            warmup=warmup,
            clip_grad=clip_grad,
            validation=validation,
            validation_split=validation_split,
            patience=patience,
            restore_best=restore_best,
            compile=compile,
            progress=progress,
            output_dir=output_dir,
            callback=callback,
        )
    finally:
        rng_fork.close()


def _check_options(**options: tuple[Any, Bound]) -> None:
    """Refuse an option of :func:`fit` outside its bound (a NaN or negative ``lr``, ...)."""
    for name, (value, bound) in options.items():
        if not bound.test(value):
            raise ConfigError(f"fit: {name}: expected {bound.expected}, got {value!r}")


def _check_checkpoint(
    ckpt: Mapping[str, Any],
    path: Path,
    *,
    seed: int | None,
    n: int,
    epochs: int,
    w_info: Mapping[str, float] | None,
) -> None:
    """Refuse a checkpoint of another run (seed, events, weights, epoch count) or a damaged one.

    The learning-rate schedule spans the epochs of the run, so a run is resumed with the epoch
    count it was started with; the completed epoch must lie in ``1 .. epochs`` and match the
    history saved with it.
    """
    fit = ckpt["fit"]
    if seed is not None and seed != fit["seed"]:
        raise ConfigError(f"seed={seed} differs from the checkpoint's seed {fit['seed']}")
    if fit["n"] != n:
        raise ModelError(f"checkpoint {path} was written for {fit['n']} events, got {n}")
    saved = fit.get("weights")  # sum and sum of squares of the weights, or None
    if saved is None and w_info is not None:
        raise ModelError(f"checkpoint {path} was written without weights; got weights")
    if saved is not None and w_info is None:
        raise ModelError(f"checkpoint {path} was written with weights; got none")
    if saved is not None and not all(math.isclose(saved[k], w_info[k], rel_tol=1e-9) for k in saved):
        raise ModelError(f"checkpoint {path} was written with other weights than these")
    total, done = fit.get("epochs"), ckpt.get("epoch")
    if total != epochs:
        raise ConfigError(
            f"checkpoint {path} belongs to a run of {total} epochs, got epochs={epochs}: its "
            f"learning-rate schedule spans {total} epochs; resume with epochs = {total}, or train "
            "afresh without resume"
        )
    history = ckpt.get("history")
    trained = len(history.get("train_loss", ())) if isinstance(history, Mapping) else None
    if not isinstance(done, int) or isinstance(done, bool) or not 1 <= done <= total or done != trained:
        raise ModelError(
            f"checkpoint {path} records epoch {done!r}, but a run of {total} epochs with {trained} "
            "epochs of history: the file is damaged or was edited"
        )


def _fit(
    model: nn.Module,
    theta_t: Tensor,
    ctx: Any,
    w: Tensor | None,
    w_info: dict[str, float] | None,
    n: int,
    gen: torch.Generator,
    seed: int,
    ckpt: dict[str, Any] | None,
    ckpt_path: Path | None,
    dev: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    schedule: str,
    warmup: float,
    clip_grad: float | None,
    validation: tuple[Any, ...] | None,
    validation_split: float,
    patience: int | None,
    restore_best: bool,
    compile: bool,
    progress: bool | None,
    output_dir: str | Path | None,
    callback: Callable[[History], bool | None] | None,
) -> History:
    # train / validation split
    va_w = None
    if validation is not None:
        tr_theta, tr_ctx, tr_w = theta_t, ctx, w
        va_theta, va_ctx = _convert(model, *validation[:2])
        if len(validation) == 3:
            va_w = _check_weights(validation[2], va_theta.shape[0])
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed ^ 0x5EED))
        n_val = round(validation_split * n)
        if validation_split > 0 and n - n_val < 1:
            raise InputError(f"{n} events are too few for validation_split={validation_split}")
        tr_idx, va_idx = order[n_val:], order[:n_val]
        tr_theta, tr_ctx = theta_t[tr_idx], None if ctx is None else index_context(ctx, tr_idx)
        va_theta = theta_t[va_idx] if n_val else None
        va_ctx = None if ctx is None or not n_val else index_context(ctx, va_idx)
        tr_w = None if w is None else w[tr_idx]
        va_w = None if w is None or not n_val else w[va_idx]
    n_train = tr_theta.shape[0]
    if n_train == 0:
        raise InputError("no training events")
    # weights relative to the mean weight of their set: see fit's docstring
    if tr_w is not None:
        tr_w = _unit_mean(tr_w, "training").to(dev)
    if va_w is not None:
        va_w = _unit_mean(va_w, "validation").to(dev)

    if ckpt is None and hasattr(model, "prepare"):
        model.prepare(tr_theta.to(dev), _to(tr_ctx, dev))
    tr_theta, tr_ctx = tr_theta.to(dev), _to(tr_ctx, dev)
    if va_theta is not None:
        va_theta, va_ctx = va_theta.to(dev), _to(va_ctx, dev)

    # one contiguous buffer for the parameters and one for their gradients: the optimizer step,
    # the clipping and the zeroing each touch one tensor instead of one per parameter
    flat = FlatParameters(model.parameters())
    params = flat.flat
    opt = _make_optimizer(params, lr, weight_decay)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)
    warmup_steps = max(1, int(warmup * total_steps)) if warmup > 0 else 0
    if schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=total_steps, pct_start=max(warmup, 1.0 / total_steps)
        )
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(schedule, total_steps, warmup_steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    history = History(
        device=str(dev),
        precision="fp32" if amp_dtype is None else str(amp_dtype).split(".")[-1],
        loss=str(getattr(model, "loss_name", History.loss)),
    )
    best_loss, best_epoch, bad_epochs, best_state = math.inf, None, 0, None
    start_epoch = 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise ModelError(f"checkpoint {ckpt_path} does not match the model: {err}") from err
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"], gen)
        start_epoch = int(ckpt["epoch"])
        history = History.from_dict(ckpt["history"])
        best = ckpt["best"]
        best_loss = math.inf if best["loss"] is None else float(best["loss"])
        best_epoch, bad_epochs, best_state = best["epoch"], int(best["bad_epochs"]), best.get("state")
        log.info("resuming from %s after epoch %d", ckpt_path, start_epoch)

    loss_fn: Callable[..., Tensor] = model.training_loss
    if compile:
        loss_fn = torch.compile(model.training_loss)

    def autocast() -> Any:
        return torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc="fit", unit="epoch", dynamic_ncols=True)

    stopped = False
    try:
        for epoch in range(start_epoch, epochs):
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n_train, generator=gen).to(dev)
            loss_sum = torch.zeros((), device=dev)
            for i in range(0, n_train, batch_size):
                idx = perm[i : i + batch_size]
                tb = tr_theta[idx]
                cb = None if tr_ctx is None else index_context(tr_ctx, idx)
                with autocast():
                    loss = loss_fn(tb, cb) if tr_w is None else loss_fn(tb, cb, weights=tr_w[idx])
                scaler.scale(loss).backward()
                if clip_grad is not None:
                    scaler.unscale_(opt)
                    _clip(params, clip_grad)
                scaler.step(opt)
                scaler.update()
                sched.step()
                flat.zero_grad()
                loss_sum += loss.detach().float() * idx.shape[0]
                if bar is not None and (i // batch_size) % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            train_loss = float(loss_sum) / n_train
            dt = time.perf_counter() - t0
            if not math.isfinite(train_loss):
                raise ModelError(
                    f"training diverged in epoch {epoch + 1}: the loss is {train_loss}; "
                    f"try a smaller lr (lr={lr}) or check the inputs"
                )
            val_loss = None
            if va_theta is not None:
                val_loss = _evaluate(model, va_theta, va_ctx, va_w, 4 * batch_size, autocast)
                if val_loss < best_loss:
                    best_loss, best_epoch, bad_epochs = val_loss, epoch + 1, 0
                    if restore_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
            history.append(
                epoch=epoch + 1,
                train_loss=train_loss,
                val_loss=val_loss,
                lr=opt.param_groups[0]["lr"],
                time=dt,
                samples_per_s=n_train / dt if dt > 0 else math.inf,
            )
            history.best_epoch = best_epoch
            history.best_val_loss = None if best_epoch is None else best_loss
            stop = patience is not None and val_loss is not None and bad_epochs >= patience
            history.stopped_early = stop
            if ckpt_path is not None:
                save_checkpoint(
                    ckpt_path,
                    {
                        "epoch": epoch + 1,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": get_rng_state(gen),
                        "history": history.to_dict(),
                        "best": {
                            "loss": None if best_epoch is None else best_loss,
                            "epoch": best_epoch,
                            "bad_epochs": bad_epochs,
                            "state": best_state,
                        },
                        "fit": {
                            "seed": seed,
                            "n": n,
                            "epochs": epochs,
                            "batch_size": batch_size,
                            "weights": w_info,
                        },
                    },
                )
            if bar is not None:
                post = {"train": f"{train_loss:.4f}"}
                if val_loss is not None:
                    post["val"] = f"{val_loss:.4f}"
                post["samples/s"] = f"{n_train / dt:.3g}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if callback is not None and callback(history):
                stopped = True
            if stop or stopped:
                log.info("early stopping after epoch %d (best epoch %s)", epoch + 1, best_epoch)
                break
    finally:
        flat.release()
        if bar is not None:
            bar.close()

    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if output_dir is not None:
        out = Path(output_dir)
        history.to_json(out / "history.json")
        history.plot(out / "loss.png")
    return history


@torch.no_grad()
def _evaluate(
    model: nn.Module, theta: Tensor, ctx: Any, w: Tensor | None, batch: int, autocast: Callable[[], Any]
) -> float:
    """Mean loss over a set (weighted by ``w``, of mean 1, when given), in batches."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=theta.device)
    n = theta.shape[0]
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        with autocast():
            c = None if ctx is None else index_context(ctx, sl)
            loss = (
                model.training_loss(theta[sl], c)
                if w is None
                else model.training_loss(theta[sl], c, weights=w[sl])
            )
        total += loss.double() * theta[sl].shape[0]
    return float(total) / n

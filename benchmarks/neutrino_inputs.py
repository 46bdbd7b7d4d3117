"""Do the W-mass roots as inputs, or a larger set encoder, help? A/B of the conditioning network.

Usage::

    python benchmarks/neutrino_inputs.py --train data/features_train --test data/features_test \
        [--variants shipped,roots,sumet,wide] [--epochs 24] [--samples 256] [--seed 1] \
        [--train-root 'data/tt_s*.root' --test-root data/tt_test.root]

Issue 18 (item 4) asks to try what the physics suggests as extra conditioning inputs, as
nu-Flows allows. The two roots of the W-mass constraint are a fixed function of inputs the flow
already gets (MET, lepton), but a non-linear one (a square root that turns complex), which a
network has to learn from the data. This study trains the shipped neutrino cINN twice on the
same processed features (``hepflow process neutrino`` with truth), with the shipped config, in
the variants chosen with ``--variants``:

* ``shipped``: the flat features of the analysis (MET, lepton, multiplicities) and the jets;
* ``roots``: the same plus, per event, the pseudorapidities of both roots
  ``asinh(pz_+/MET)`` and ``asinh(pz_-/MET)`` (the real parts when complex),
  ``asinh(|Im pz|/MET)`` and the complex flag;
* ``sumet``: the same plus ``ln(MET_sumEt / GeV)``, the per-event MET resolution that issue 18
  suggests: the MET resolution per component grows as ``sqrt(a^2 + b^2 sumEt)`` (docs/detector.md),
  and with pileup drawn per event (nPU of sd about 11) it varies by about +-11 % from event to
  event (+-22 % in variance), which the shipped inputs do not give the flow directly.
  ``MET_sumEt`` is read from the ROOT files the features were processed from (``--train-root``,
  ``--test-root``, globs expanded), matched by ``(luminosityBlock, event)``;
* ``wide``: the shipped inputs with a larger set encoder over the jets (``[summary]``
  ``jet_embedding`` 64, ``set_width`` 128, ``set_blocks`` 2 instead of 32, 64, 1), which issue
  18 suggests next to the roots.

It scores every variant on the held-out features: CRPS of pz (and its ratio to the quadratic solution's
point CRPS), the energy score of (px, py, pz), the core width (IQR/1.349), RMS and bias of the
posterior median's pz residual, and the coverage of central 68 % / 95 % intervals, and prints
the ratio of each variant's pz CRPS to the shipped flow's with its paired bootstrap error and a
verdict. Nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import awkward as ak
import numpy as np
import torch

import hepflow
from hepflow.calibration.coverage import coverage_at
from hepflow.calibration.paired import paired_ratio
from hepflow.calibration.scores import crps_ensemble, energy_score
from hepflow.flows.inn import ConditionalINN
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.data import load_training_data
from hepflow.neutrino.model import build_flow, neutrino_pz
from hepflow.neutrino.quadratic import lepton_mass, solve_neutrino_pz
from hepflow.neutrino.report import resolution
from hepflow.outputs import read_parquet_dir

ROOT_FEATURES = ("root_eta_plus", "root_eta_minus", "root_eta_imag", "root_is_complex")
#: the variants: (label, extra flat inputs, [summary] changes)
VARIANTS = {
    "shipped": ("shipped", None, {}),
    "roots": ("+ roots", "roots", {}),
    "sumet": ("+ ln sumEt", "sumet", {}),
    "wide": ("wide set encoder", None, {"jet_embedding": 64, "set_width": 128, "set_blocks": 2}),
}
#: per extra input: which of its columns are discrete (dequantized in training)
DISCRETE = {"roots": (False, False, False, True), "sumet": (False,)}


def root_features(directory: str) -> np.ndarray:
    """The four root features of every event with a truth neutrino (the rows training keeps)."""
    cols = read_parquet_dir(directory)
    cols = cols[~ak.is_none(cols.nu_px_true)]
    met_px, met_py = (ak.to_numpy(cols[k]).astype(np.float64) for k in ("met_px", "met_py"))
    lep = [ak.to_numpy(cols[f"lep_{k}"]).astype(np.float64) for k in ("px", "py", "pz")]
    sol = solve_neutrino_pz(*lep, met_px, met_py, lep_mass=lepton_mass(ak.to_numpy(cols.lep_flavor)))
    met = np.maximum(np.hypot(met_px, met_py), 1.0)
    feats = [np.arcsinh(np.asarray(v, np.float64) / met) for v in (sol.pz_plus, sol.pz_minus, sol.pz_imag)]
    return np.stack([*feats, np.asarray(sol.is_complex, np.float64)], axis=1).astype(np.float32)


def sumet_features(directory: str, root_files: list[str]) -> np.ndarray:
    """``ln(MET_sumEt / GeV)`` of every event with a truth neutrino (the rows training keeps),
    read from the ROOT files the features came from and matched by ``(luminosityBlock, event)``
    (a generated file's luminosity block is its seed, so the pair is unique across files)."""
    import glob

    import uproot

    if not root_files:
        raise SystemExit("--variants sumet needs --train-root and --test-root (the processed ROOT files)")
    table: dict[tuple[int, int], float] = {}
    for pattern in root_files:
        paths = sorted(glob.glob(pattern))
        if not paths:
            raise SystemExit(f"{pattern}: no such file")
        for path in paths:
            try:
                with uproot.open(path) as f:
                    b = f["Events"].arrays(["luminosityBlock", "event", "MET_sumEt"], library="np")
            except Exception as err:  # unreadable, no Events tree, a missing branch
                raise SystemExit(
                    f"{path}: cannot read Events luminosityBlock, event, MET_sumEt ({err})"
                ) from None
            ids = list(zip(b["luminosityBlock"].tolist(), b["event"].tolist(), strict=True))
            if repeated := next((i for i in ids if i in table), None):
                raise SystemExit(f"{path}: (luminosityBlock, event) {repeated} is also in another file")
            table.update(zip(ids, b["MET_sumEt"].tolist(), strict=True))
    cols = read_parquet_dir(directory)
    cols = cols[~ak.is_none(cols.nu_px_true)]
    keys = zip(ak.to_list(cols.luminosityBlock), ak.to_list(cols.event), strict=True)
    try:
        sumet = np.array([table[k] for k in keys], np.float64)
    except KeyError as missing:
        raise SystemExit(f"{directory}: event {missing} is in none of the ROOT files given") from None
    return np.log(np.maximum(sumet, 1.0))[:, None].astype(np.float32)


def draw(flow: ConditionalINN, ctx: dict[str, np.ndarray], samples: int, seed: int) -> np.ndarray:
    """(n, samples, 3) draws of (px, py, pz)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, len(ctx["flat"]), 1024):
            batch = {k: torch.as_tensor(v[start : start + 1024]) for k, v in ctx.items()}
            theta = flow.sample(samples, batch, generator=gen).double().numpy()
            out.append(
                np.stack([theta[..., 0], theta[..., 1], neutrino_pz(*np.moveaxis(theta, -1, 0))], axis=-1)
            )
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="processed training features (with truth)")
    parser.add_argument("--test", required=True, help="processed held-out features (with truth)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the shipped config's")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-root", nargs="*", default=[], help="ROOT files of --train (sumet)")
    parser.add_argument("--test-root", nargs="*", default=[], help="ROOT files of --test (sumet)")
    parser.add_argument(
        "--variants",
        default="shipped,roots",
        help=f"comma-separated, from {', '.join(VARIANTS)} (shipped first)",
    )
    args = parser.parse_args()
    chosen = args.variants.split(",")
    if chosen[0] != "shipped" or any(v not in VARIANTS for v in chosen):
        raise SystemExit(f"--variants: shipped first, then any of {', '.join(VARIANTS)}; got {args.variants}")

    cfg = NeutrinoConfig.load(None)
    train, test = load_training_data(args.train), load_training_data(args.test)
    builders = {
        "roots": lambda part: root_features(getattr(args, part)),
        "sumet": lambda part: sumet_features(getattr(args, part), getattr(args, f"{part}_root")),
    }
    extra = {
        (name, part): builders[name](part)
        for name in {VARIANTS[v][1] for v in chosen} - {None}
        for part in ("train", "test")
    }
    for (name, part), values in extra.items():
        if len(values) != len((train if part == "train" else test).theta):
            raise SystemExit(f"the {name} features do not line up with the {part} rows (non-finite rows?)")
    truth = test.theta.astype(np.float64)
    true = np.stack([truth[:, 0], truth[:, 1], neutrino_pz(truth[:, 0], truth[:, 1], truth[:, 2])], axis=1)
    n_train, n_test = len(train.theta), len(test.theta)
    print(f"training events {n_train}, held-out events {n_test}, torch threads {torch.get_num_threads()}")

    options = cfg.training.fit_options()
    if args.epochs is not None:
        options["epochs"] = args.epochs
    results: dict[str, dict[str, object]] = {}
    for name, inputs, summary in (VARIANTS[v] for v in chosen):

        def ctx(data, part, inputs=inputs):
            if inputs is None:
                return data.context
            flat = np.concatenate([data.context["flat"], extra[inputs, part]], axis=1)
            return {**data.context, "flat": flat}

        # the shipped flow, with the extra flat inputs of the variant
        added = DISCRETE[inputs] if inputs is not None else ()
        summary_cfg = dataclasses.replace(cfg.summary, **summary)
        flow = build_flow(cfg.flow, summary_cfg, support=cfg.support, seed=args.seed, extra_flat=added)
        t0 = time.perf_counter()
        history = hepflow.fit(
            flow, train.theta, ctx(train, "train"), weights=train.weights, **{**options, "progress": False}
        )
        seconds = time.perf_counter() - t0
        draws = draw(flow.eval(), ctx(test, "test"), args.samples, args.seed)
        median = np.median(draws[..., 2], axis=1)
        results[name] = {
            "draws": draws,
            "crps_pz": crps_ensemble(draws[..., 2], true[:, 2]),
            "energy": energy_score(draws, true),
            "res": resolution(median - true[:, 2]),
            "cov": coverage_at(true, draws),
            "val": history.best_val_loss,
            "seconds": seconds,
        }
        val = history.best_val_loss
        size = sum(p.numel() for p in flow.parameters())
        print(
            f"trained {name} ({size} parameters): {len(history)} epochs in {seconds:.0f} s, "
            f"best validation NLL {val:.4f}"
        )

    cols = read_parquet_dir(args.test)
    cols = cols[~ak.is_none(cols.nu_px_true)]
    lep = [ak.to_numpy(cols[f"lep_{k}"]).astype(np.float64) for k in ("px", "py", "pz")]
    quad = solve_neutrino_pz(
        *lep,
        ak.to_numpy(cols.met_px),
        ak.to_numpy(cols.met_py),
        lep_mass=lepton_mass(ak.to_numpy(cols.lep_flavor)),
    )
    quad_crps = np.abs(np.asarray(quad.pz, np.float64) - true[:, 2])

    header = ["inputs", "pz CRPS [GeV]", "/ quadratic", "energy score [GeV]", "pz core width [GeV]"]
    header += ["pz RMS [GeV]", "pz bias [GeV]", "cov 68 % px/py/pz", "cov 95 % px/py/pz", "val NLL"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    q = resolution(np.asarray(quad.pz, np.float64) - true[:, 2])
    rows = [
        ["quadratic (point)", f"{quad_crps.mean():.1f}", "1", "", f"{q['iqr_width']:.1f}", f"{q['rms']:.1f}"]
    ]
    rows[0] += [f"{q['bias']:+.1f}", "", "", ""]
    for name, r in results.items():
        res, cov, crps = r["res"], r["cov"], r["crps_pz"].mean()
        rows.append([name, f"{crps:.1f}", f"{crps / quad_crps.mean():.3f}", f"{r['energy'].mean():.1f}"])
        rows[-1] += [f"{res['iqr_width']:.1f}", f"{res['rms']:.1f}", f"{res['bias']:+.1f}"]
        rows[-1] += ["/".join(f"{c:.3f}" for c in cov[level]) for level in (0.68, 0.95)]
        rows[-1].append(f"{r['val']:.4f}")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    b = results["shipped"]["crps_pz"]
    for name, r in results.items():
        if name == "shipped":
            continue
        a = r["crps_pz"]
        pr = paired_ratio(lambda i, a=a: (float(a[i].mean()), float(b[i].mean())), len(a))
        verdict = (
            "a tie within the statistical uncertainty"
            if not pr.significant()
            else (f"{name} helps" if pr.ratio < 1 else f"{name} hurts")
        )
        ratio = f"{pr.ratio:.3f} +- {pr.ratio * pr.se:.3f}"
        print(f"\npz CRPS {name} / shipped: {ratio} (paired bootstrap): {verdict}")


if __name__ == "__main__":
    main()

"""How well can anything pick the right quadratic root, and what pz width does that buy?

Usage::

    python benchmarks/neutrino_root_choice.py --train data/features_big --test data/features_test \
        [--epochs 60] [--seed 1]

The neutrino pz target of the analysis (flow width at most 0.75 of the quadratic solution's)
comes down to choosing between the two W-mass roots. This study measures, on processed features
with truth (``hepflow process neutrino``), for events whose roots are real:

* the correct-root fraction of the quadratic convention (smaller ``|pz|``), of the top-mass
  heuristic (the root whose ``m(l nu j)`` with a b-tagged jet, or any jet when none is tagged,
  is nearest 172.5 GeV), and of a dedicated classifier: an MLP trained with the truth label
  (which root is nearer the true pz) on the conditioning features plus both roots and the
  ``m(l nu j)`` of every jet for either root. The classifier gets the information the cINN gets,
  handed over in the form a physicist would engineer;
* the IQR width of pz (IQR / 1.349 of the residual, as in the report) when each pick is used,
  relative to the quadratic's (complex events keep the real part in every method);
* the correct-root fraction a root-picking estimator needs to reach a ratio of 0.75, starting
  from the oracle and making mistakes two ways: at random, and first on the events whose wrong
  root is nearest the truth (where a mistake moves the estimate least).

It prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np
import torch

import hepflow
from hepflow.neutrino.quadratic import solve_neutrino_pz
from hepflow.neutrino.report import resolution
from hepflow.outputs import read_parquet_dir

M_TOP = 172.5
N_JETS = 10


def _iqr_width(residual: np.ndarray) -> float:
    return resolution(residual)["iqr_width"]


def _events(path: str) -> dict[str, np.ndarray]:
    """Flat arrays of the selected events with truth: lepton, MET, padded jets, roots, m(l nu j)."""
    cols = read_parquet_dir(path)
    cols = cols[~ak.is_none(cols.nu_pz_true)]
    f = {
        k: ak.to_numpy(ak.fill_none(cols[k], np.nan)).astype(np.float64)
        for k in cols.fields
        if cols[k].ndim == 1
    }
    jets = {}
    for k in ("jet_px", "jet_py", "jet_eta", "jet_loge", "jet_btag"):
        jets[k] = ak.to_numpy(ak.fill_none(ak.pad_none(cols[k], N_JETS, clip=True), 0.0)).astype(np.float64)
    jets["mask"] = ak.to_numpy(ak.fill_none(ak.pad_none(ak.ones_like(cols.jet_px), N_JETS, clip=True), 0)) > 0
    sol = solve_neutrino_pz(f["lep_px"], f["lep_py"], f["lep_pz"], f["met_px"], f["met_py"], lep_e=f["lep_e"])
    roots = np.stack([np.asarray(sol.pz, float), np.asarray(sol.pz_alt, float)], axis=1)
    # m(l nu_r j) for both roots and every jet slot
    pt_j = np.hypot(jets["jet_px"], jets["jet_py"])
    pz_j = pt_j * np.sinh(jets["jet_eta"])
    e_j = np.where(jets["mask"], np.exp(jets["jet_loge"]), 0.0)
    m_lnuj = np.zeros((len(roots), 2, N_JETS))
    for r in range(2):
        pz_nu = roots[:, r]
        e_nu = np.sqrt(f["met_px"] ** 2 + f["met_py"] ** 2 + pz_nu**2)
        e = (f["lep_e"] + e_nu)[:, None] + e_j
        px = (f["lep_px"] + f["met_px"])[:, None] + jets["jet_px"]
        py = (f["lep_py"] + f["met_py"])[:, None] + jets["jet_py"]
        pz = (f["lep_pz"] + pz_nu)[:, None] + pz_j
        m_lnuj[:, r] = np.where(jets["mask"], np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)), 0.0)
    return {
        **f,
        **jets,
        "roots": roots,
        "is_complex": np.asarray(sol.is_complex, bool),
        "m_lnuj": m_lnuj,
        "true_pz": f["nu_pz_true"],
    }


def _inputs(ev: dict[str, np.ndarray]) -> np.ndarray:
    scalars = [ev[k] / 100.0 for k in ("met_px", "met_py", "lep_px", "lep_py", "lep_pz", "lep_e")]
    scalars += [ev["roots"][:, 0] / 100.0, ev["roots"][:, 1] / 100.0, ev["njet"] / 10.0, ev["nbjet"] / 4.0]
    jets = [
        ev["jet_px"] / 100.0,
        ev["jet_py"] / 100.0,
        ev["jet_eta"],
        np.where(ev["mask"], ev["jet_loge"] - 4.0, 0.0),
        ev["jet_btag"],
        ev["mask"].astype(float),
    ]
    masses = (ev["m_lnuj"] / M_TOP - 1.0) * ev["mask"][:, None, :]
    return np.concatenate([np.stack(scalars, 1), *jets, masses.reshape(len(masses), -1)], axis=1).astype(
        np.float32
    )


def _top_mass_pick(ev: dict[str, np.ndarray]) -> np.ndarray:
    """0 (first root) or 1: the root whose m(l nu b) is nearest the top mass."""
    tagged = (ev["jet_btag"] > 0) & ev["mask"]
    usable = np.where(tagged.any(1, keepdims=True), tagged, ev["mask"])
    dist = np.where(usable[:, None, :], np.abs(ev["m_lnuj"] - M_TOP), np.inf).min(axis=2)
    return (dist[:, 1] < dist[:, 0]).astype(int)


class _RootClassifier(torch.nn.Module):
    """P(first root is the right one | inputs): an MLP trained by :func:`hepflow.fit` on BCE."""

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_inputs, 256),
            torch.nn.SiLU(),
            torch.nn.Linear(256, 256),
            torch.nn.SiLU(),
            torch.nn.Linear(256, 256),
            torch.nn.SiLU(),
            torch.nn.Linear(256, 1),
        )

    def training_loss(self, label: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(inputs), label)

    @torch.no_grad()
    def probability(self, inputs: np.ndarray) -> np.ndarray:
        return torch.sigmoid(self.net(torch.from_numpy(inputs))).squeeze(1).numpy()


def _train_classifier(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> tuple[_RootClassifier, int]:
    """The classifier and the number of epochs trained (early stopping on a 10 % validation split)."""
    torch.manual_seed(seed)
    net = _RootClassifier(x.shape[1])
    history = hepflow.fit(
        net,
        y.astype(np.float32)[:, None],
        x,
        epochs=epochs,
        batch_size=512,
        weight_decay=1e-4,
        validation_split=0.1,
        patience=10,
        seed=seed,
        progress=False,
    )
    return net.eval(), len(history.train_loss)


def _needed_fraction(
    ev: dict[str, np.ndarray], real: np.ndarray, target: float, *, favourable: bool
) -> float:
    """Smallest correct-root fraction whose pz width ratio reaches ``target``."""
    rng = np.random.default_rng(0)
    true = ev["true_pz"]
    oracle = np.argmin(np.abs(ev["roots"] - true[:, None]), axis=1)
    wrong_cost = np.abs(ev["roots"][np.arange(len(true)), 1 - oracle] - true)
    order = np.flatnonzero(real)
    order = order[np.argsort(wrong_cost[order])] if favourable else rng.permutation(order)
    quad_w = _iqr_width(ev["roots"][:, 0] - true)
    lo, hi = 0, len(order)  # number of mistakes: the ratio grows with it
    while lo < hi:
        mid = (lo + hi + 1) // 2
        pick = oracle.copy()
        pick[order[:mid]] = 1 - pick[order[:mid]]
        est = np.where(real, ev["roots"][np.arange(len(true)), pick], ev["roots"][:, 0])
        if _iqr_width(est - true) / quad_w <= target:
            lo = mid
        else:
            hi = mid - 1
    return 1.0 - lo / len(order)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", required=True, help="processed features with truth (training)")
    parser.add_argument("--test", required=True, help="processed features with truth (held out)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.75, help="pz width ratio to reach")
    args = parser.parse_args()

    t0 = time.perf_counter()
    train, test = _events(args.train), _events(args.test)
    real_tr = ~train["is_complex"]
    y_tr = np.abs(train["roots"][:, 0] - train["true_pz"]) <= np.abs(train["roots"][:, 1] - train["true_pz"])
    net, epochs = _train_classifier(
        _inputs(train)[real_tr], y_tr[real_tr], epochs=args.epochs, seed=args.seed
    )
    p_first = net.probability(_inputs(test))

    real = ~test["is_complex"]
    true = test["true_pz"]
    rows = np.arange(len(true))
    oracle = np.argmin(np.abs(test["roots"] - true[:, None]), axis=1)
    picks = {
        "quadratic (smaller |pz|)": np.zeros(len(true), int),
        "top-mass heuristic": _top_mass_pick(test),
        "MLP classifier (truth-trained)": (p_first < 0.5).astype(int),
        "oracle (uses the truth)": oracle,
    }
    quad_w = _iqr_width(test["roots"][:, 0] - true)
    print(
        f"train {int(real_tr.sum())} events with real roots (of {len(real_tr)}), test {int(real.sum())} "
        f"(of {len(real)}); classifier {epochs} epochs; {time.perf_counter() - t0:.0f} s"
    )
    print(f"{'root choice':34s} {'correct':>8s} {'pz IQR width':>13s} {'ratio to quad':>14s}")
    for name, pick in picks.items():
        est = np.where(real, test["roots"][rows, pick], test["roots"][:, 0])
        w = _iqr_width(est - true)
        correct = float((pick == oracle)[real].mean())
        print(f"{name:34s} {correct:8.3f} {w:13.2f} {w / quad_w:14.3f}")
    for favourable in (False, True):
        need = _needed_fraction(test, real, args.target, favourable=favourable)
        how = "mistakes where the wrong root is nearest the truth" if favourable else "mistakes at random"
        print(f"correct-root fraction needed for ratio {args.target}: {need:.3f} ({how})")


if __name__ == "__main__":
    main()

"""Sequential refinement (TSNPE) on toys with known posteriors: hepflow.posterior.sequential."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

import hepflow
from hepflow.errors import ConfigError
from hepflow.posterior import FlowPosterior
from hepflow.posterior.sequential import (
    HighDensityRegion,
    Proposal,
    SeedBall,
    TruncatedPrior,
    Union,
    pooled_log_weight,
    refine,
)
from hepflow.posterior.toys import Bimodal, GaussianLinear, GaussianPrior

FAST = {"batch_size": 128, "lr": 3e-3}


def _net(dim: int = 2, seed: int = 0) -> hepflow.ConditionalINN:
    return hepflow.ConditionalINN(dim, dim, blocks="affine", depth=3, width=32, seed=seed)


@pytest.fixture(scope="module")
def linear() -> tuple[GaussianLinear, hepflow.ConditionalINN]:
    """The Gaussian linear toy and a poor amortized estimator (5 epochs on 2000 prior draws)."""
    toy = GaussianLinear(dim=2, noise=0.3)
    theta = toy.prior.sample(2000, rng=0)
    net = _net()
    hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=5, progress=False, seed=0)
    return toy, net


@pytest.fixture(scope="module")
def half_trained() -> tuple[Bimodal, hepflow.ConditionalINN]:
    """The bimodal toy and an estimator trained on theta_0 > 0 only: it misses the mirror mode."""
    toy = Bimodal(noise=0.1)
    theta = toy.prior.sample(4000, rng=0)
    theta[:, 0] = np.abs(theta[:, 0])
    net = _net()
    hepflow.fit(net, theta, toy.simulate(theta, rng=1), epochs=20, progress=False, seed=0, **FAST)
    return toy, net


def test_refined_posterior_matches_the_exact_gaussian_posterior(linear) -> None:
    toy, net = linear
    x_o = np.array([[1.5, -1.0]])  # about 1.5 prior sd out: the truncation matters
    mean, sd = toy.posterior_mean_sd(x_o[0])
    before, _ = FlowPosterior(net).sample(4000, x_o, seed=2)
    assert np.abs(before[0].mean(0) - mean).max() > 1.0 * sd.max()  # the estimator is poor
    result = refine(
        toy.simulate,
        toy.prior,
        x_o,
        estimator=net,
        rounds=3,
        simulations_per_round=2000,
        epochs=20,
        fit_options=FAST,
        seed=1,
    )
    draws, log_q = result.posterior.sample(4000, x_o, seed=2, log_prob=True)
    assert np.abs(draws[0].mean(0) - mean).max() < 0.15 * sd.max()
    np.testing.assert_allclose(draws[0].std(0), sd, rtol=0.12)
    # the density is normalised w.r.t. the prior's measure: compare it with the exact one
    exact = stats.multivariate_normal(mean, np.diag(sd**2)).logpdf(draws[0])
    assert abs(np.median(log_q[0] - exact)) < 0.15
    assert result.simulations == 6000
    assert len(result.rounds) == 3
    masses = [r.prior_mass for r in result.rounds]
    assert masses[0] > 0.9
    assert masses[-1] < 0.5
    assert result.off_intersection < 0.01
    meta = result.metadata()
    assert meta["simulations"] == 6000
    assert meta["rounds"][2]["round"] == 3
    assert meta["train_seconds"] > 0
    assert meta["seconds"] >= meta["train_seconds"]


def test_seeds_let_the_refinement_find_a_mode_the_estimator_misses(half_trained) -> None:
    toy, net = half_trained
    x_o = np.array([[1.0, 0.0]])  # theta_0 = +-1 with equal posterior mass
    before, _ = FlowPosterior(net).sample(4000, x_o, seed=2)
    assert (before[0][:, 0] < 0).mean() < 0.01
    common = {
        "estimator": net,
        "rounds": 3,
        "simulations_per_round": 2000,
        "epochs": 20,
        "fit_options": FAST,
        "seed": 1,
    }
    blind = refine(toy.simulate, toy.prior, x_o, **common)
    draws, _ = blind.posterior.sample(4000, x_o, seed=2)
    assert (draws[0][:, 0] < 0).mean() < 0.02  # the HPR alone never proposes the mirror mode
    seeded = refine(toy.simulate, toy.prior, x_o, seeds=np.array([[-1.0, 0.0]]), **common)
    draws, _ = seeded.posterior.sample(4000, x_o, seed=2)
    negative = draws[0][:, 0] < 0
    # the missed mode is found (exact mass 0.5; measured 0.71: the mode weights are reproduced
    # only to about 0.2, see docs/refine.md), and both modes sit at |theta_0| = 1
    assert 0.25 < negative.mean() < 0.8
    assert np.abs(np.abs(draws[0][:, 0]) - 1.0).mean() < 0.1
    assert seeded.rounds[0].seeds == 1
    assert seeded.rounds[1].seeds == 1  # kept in the later rounds
    assert seeded.settings["keep_seeds"] is True
    assert seeded.settings["seed_points"] == [[-1.0, 0.0]]
    assert seeded.settings["reweight"] is False


def test_w_correction_keeps_a_seeded_mode_that_weights_from_the_start_lose(half_trained) -> None:
    """A seed ball of small prior mass: trained with weights 1/W from the first round the network
    never learns the seeded mode; trained plainly and then corrected by 1/W it keeps it (exact
    mass 0.5; this toy reproduces mode masses to about 0.2-0.3, docs/refine.md)."""
    toy, net = half_trained
    x_o = np.array([[1.0, 0.0]])
    common = {
        "estimator": net, "rounds": 3, "simulations_per_round": 2000, "epochs": 20, "fit_options": FAST,
        "seed": 1, "seeds": np.array([[-1.0, 0.0]]), "seed_radius": 0.02, "seed_shells": 1,
    }  # fmt: skip
    weighted = refine(toy.simulate, toy.prior, x_o, reweight=True, **common)
    corrected = refine(toy.simulate, toy.prior, x_o, correct=True, **common)
    lost, _ = weighted.posterior.sample(4000, x_o, seed=2)
    kept, _ = corrected.posterior.sample(4000, x_o, seed=2)
    assert (lost[0][:, 0] < 0).mean() < 0.02
    assert 0.15 < (kept[0][:, 0] < 0).mean() < 0.85
    assert np.abs(np.abs(kept[0][:, 0]) - 1.0).mean() < 0.1
    record = corrected.settings["correction"]
    assert record["epochs"] == 20
    assert 0 < record["ess"] < 0.9 * 6000  # the weights 1/W vary
    assert record["seconds"] > 0
    assert weighted.settings["correction"] is None


def test_union_region_holds_either_and_draws_their_mixture() -> None:
    net = _net(1).eval()
    a = SeedBall(net, np.array([-2.0]), radius=1.0, scale=np.ones(1))  # (-3, -1)
    b = SeedBall(net, np.array([4.0]), radius=0.5, scale=np.ones(1))  # (3.5, 4.5)
    both = Union(a, b)
    assert both.contains(np.array([[-2.5], [0.0], [4.2], [5.0]])).tolist() == [True, False, True, False]
    x = both.sample(20_000, np.random.default_rng(0))
    assert both.contains(x).all()
    assert abs((x[:, 0] > 0).mean() - 0.5) < 0.02  # half from each
    # the mixture density: 1/2 x uniform on each interval
    assert np.allclose(np.exp(both.log_density(np.array([[-2.0], [4.0]]))), [0.25, 0.5])
    assert np.exp(both.log_density(np.array([[0.0]])))[0] == 0.0
    # the prior truncated to the union: both pieces by their prior mass
    trunc = TruncatedPrior(GaussianPrior(1), both)
    y = trunc.sample(4000, rng=1)
    mass = stats.norm.cdf(-1) - stats.norm.cdf(-3) + stats.norm.cdf(4.5) - stats.norm.cdf(3.5)
    assert trunc.prior_mass == pytest.approx(mass, rel=0.1)
    assert both.contains(y).all()


def test_union_regions_are_the_estimate_s_hpr_or_the_corrected_one(half_trained) -> None:
    """regions="union": every later region holds the HPR of the estimate and that of the
    estimate corrected by 1/W; "estimate" and "corrected" each one of them."""
    toy, net = half_trained
    x_o = np.array([[1.0, 0.0]])
    common = {"estimator": net, "rounds": 2, "simulations_per_round": 500, "epochs": 2, "fit_options": FAST}
    kept = {}
    for regions in ("estimate", "corrected", "union"):
        result = refine(
            toy.simulate, toy.prior, x_o, seeds=np.array([[-1.0, 0.0]]), regions=regions, seed=3, **common
        )
        assert result.settings["regions"] == regions
        first, second = (p.components[0].region for p in result.proposals)
        assert isinstance(first, HighDensityRegion)
        assert first.log_weight is None
        kept[regions] = second
    assert kept["estimate"].log_weight is None
    assert kept["corrected"].log_weight is not None
    union = kept["union"]
    assert isinstance(union, Union)
    assert union.a.log_weight is None
    assert union.b.log_weight is not None
    # the same network and thresholds as the two single runs (same seed): the union of both
    probe = np.random.default_rng(4).normal(size=(5000, 2)) * 2
    assert np.array_equal(
        union.contains(probe), kept["estimate"].contains(probe) | kept["corrected"].contains(probe)
    )


def test_truncated_prior_by_rejection_is_the_prior_inside_the_region() -> None:
    net = _net(1).eval()
    region = SeedBall(net, np.array([10.0]), radius=10.0, scale=np.ones(1))  # theta in [0, 20]
    tp = TruncatedPrior(GaussianPrior(1), region)
    x = tp.sample(20_000, rng=0)
    assert tp.method == "rejection"
    assert (x > 0).all()  # samples outside the region never appear
    assert tp.prior_mass == pytest.approx(0.5, abs=0.01)
    # the half-normal: mean sqrt(2 / pi)
    assert x.mean() == pytest.approx(math.sqrt(2 / math.pi), abs=0.02)
    inside = np.array([[0.3], [1.7]])
    np.testing.assert_allclose(
        tp.log_prob(inside), GaussianPrior(1).log_prob(inside) - math.log(tp.prior_mass)
    )
    assert np.isneginf(tp.log_prob(np.array([[-0.3]]))).all()


def test_truncated_prior_of_tiny_mass_is_drawn_by_sir() -> None:
    net = _net(1).eval()
    region = SeedBall(net, np.array([4.0]), radius=0.1, scale=np.ones(1))  # theta in [3.9, 4.1]
    tp = TruncatedPrior(GaussianPrior(1), region)
    x = tp.sample(5000, rng=1)
    assert tp.method == "sir"
    assert ((x > 3.9) & (x < 4.1)).all()
    exact_mass = stats.norm.cdf(4.1) - stats.norm.cdf(3.9)
    assert tp.prior_mass == pytest.approx(exact_mass, rel=0.05)
    # the prior's shape inside the interval: the truncated normal's mean
    exact_mean = stats.truncnorm(3.9, 4.1).mean()
    assert x.mean() == pytest.approx(exact_mean, abs=0.005)
    assert 0 < tp.efficiency <= 1


class _UniformSquare:
    """Uniform on [0, 10]^2, restrictable to a box (the capability ``TruncatedPrior`` uses)."""

    def sample(self, n: int, rng: Any = None) -> np.ndarray:
        return 10.0 * np.random.default_rng(rng).random((n, 2))

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        inside = np.all((t >= 0) & (t <= 10), axis=1)
        return np.where(inside, -math.log(100.0), -np.inf)

    def restrict(self, lower: np.ndarray, upper: np.ndarray) -> tuple[Any, float, np.ndarray, np.ndarray]:
        lo, hi = np.maximum(lower, 0.0), np.minimum(upper, 10.0)

        class Sub:
            def sample(self, n: int, rng: Any = None) -> np.ndarray:
                return lo + (hi - lo) * np.random.default_rng(rng).random((n, 2))

        mass = float(np.prod((hi - lo) / 10.0))
        return Sub(), mass, np.where(lo > 0, lo, -np.inf), np.where(hi < 10, hi, np.inf)


def test_truncated_prior_of_tiny_mass_is_drawn_by_rejection_in_a_box_when_the_prior_allows() -> None:
    """A disc of 3e-4 of the prior's mass: rejection from the whole prior is below its minimum
    acceptance, but the prior restricted to a box around the disc gives exact, distinct draws."""
    net = _net(2).eval()
    region = SeedBall(net, np.array([4.0, 6.0]), radius=0.1, scale=np.ones(2))
    tp = TruncatedPrior(_UniformSquare(), region)
    x = tp.sample(5000, rng=2)
    assert tp.method == "box-rejection"
    assert len(np.unique(x, axis=0)) == 5000  # no resampled duplicates (SIR repeats draws)
    assert np.all(np.hypot(x[:, 0] - 4.0, x[:, 1] - 6.0) <= 0.1)
    assert tp.prior_mass == pytest.approx(math.pi * 0.01 / 100.0, rel=0.05)
    # uniform on the disc: mean at its centre, mean squared radius r^2 / 2
    np.testing.assert_allclose(x.mean(axis=0), [4.0, 6.0], atol=0.003)
    assert np.mean((x[:, 0] - 4.0) ** 2 + (x[:, 1] - 6.0) ** 2) == pytest.approx(0.005, rel=0.05)
    # the region is now the disc within the box: the proposal's density stays exact
    assert tp.region.contains(np.array([[4.0, 6.0]])).all()
    np.testing.assert_allclose(tp.log_prob(np.array([[4.05, 6.0]])), -math.log(100.0 * tp.prior_mass))
    assert np.isneginf(tp.log_prob(np.array([[4.2, 6.0]]))).all()


def test_a_region_on_a_face_of_the_prior_is_boxed_too() -> None:
    """A disc cut by the prior's edge x = 0: the box's lower face is the prior's own bound
    (infinite), which must not count as a face the region reaches."""
    net = _net(2).eval()
    region = SeedBall(net, np.array([0.05, 6.0]), radius=0.1, scale=np.ones(2))
    tp = TruncatedPrior(_UniformSquare(), region)
    x = tp.sample(4000, rng=3)
    assert tp.method == "box-rejection"
    assert (x[:, 0] >= 0).all()
    # the disc's part at x >= 0: its area minus the segment beyond the edge (distance 0.05)
    inside = math.pi * 0.01 - (0.01 * math.acos(0.5) - 0.05 * math.sqrt(0.01 - 0.0025))
    assert tp.prior_mass == pytest.approx(inside / 100.0, rel=0.05)


class _CosmicWindow:
    """A region of the cosmic prior like a posterior's: narrow in gamma and lg R_cut, f_Fe below
    0.02, f_N between 0.4 and 0.7 (its probe draws: the prior there, by rejection)."""

    def contains(self, theta: np.ndarray) -> np.ndarray:
        t = np.asarray(theta, dtype=np.float64)
        return (
            (np.abs(t[:, 0] - 1.4) < 0.1)
            & (np.abs(t[:, 1] - 18.67) < 0.03)
            & (t[:, 6] < 0.02)
            & (t[:, 4] > 0.4)
            & (t[:, 4] < 0.7)
        )

    def sample(self, n: int, gen: np.random.Generator) -> np.ndarray:
        from hepflow.cosmic import Prior

        draws = Prior(gamma=(1.3, 1.5), lg_rcut=(18.64, 18.70)).sample(60 * n, gen)
        return draws[self.contains(draws)][:n]


def test_a_cosmic_posterior_window_is_drawn_by_rejection_in_a_box() -> None:
    """The cosmic prior restricted to a box in gamma, lg R_cut and the fractions: exact draws of a
    region of ~1e-4 of the prior's mass, which the whole prior reaches too rarely."""
    from hepflow.cosmic import Prior

    prior = Prior()
    tp = TruncatedPrior(prior, _CosmicWindow(), box_probe=4000)
    x = tp.sample(3000, rng=5)
    assert tp.method == "box-rejection"
    assert _CosmicWindow().contains(x).all()
    assert len(np.unique(x, axis=0)) == 3000
    # the window's prior mass: the box of gamma, lg R_cut times the Dirichlet's share
    f = np.random.default_rng(6).dirichlet(np.ones(5), size=400_000)
    share = np.mean((f[:, 4] < 0.02) & (f[:, 2] > 0.4) & (f[:, 2] < 0.7))
    assert tp.prior_mass == pytest.approx(0.2 / 6.0 * 0.06 / 2.0 * share, rel=0.05)


def test_mixture_proposal_and_pooled_weight_are_piecewise_constant() -> None:
    net = _net(1).eval()
    prior = GaussianPrior(1)
    left = TruncatedPrior(prior, SeedBall(net, np.array([-1.0]), radius=0.5, scale=np.ones(1)))
    right = TruncatedPrior(prior, SeedBall(net, np.array([1.5]), radius=0.5, scale=np.ones(1)))
    proposal = Proposal([left, right], [0.25, 0.75])
    x = proposal.sample(8000, rng=0)
    assert proposal.contains(x).all()
    assert (x < 0).mean() == pytest.approx(0.25, abs=0.02)
    ratio = proposal.log_ratio(np.array([[-1.0], [1.5], [0.2]]))
    assert ratio[0] == pytest.approx(math.log(0.25 / left.prior_mass))
    assert ratio[1] == pytest.approx(math.log(0.75 / right.prior_mass))
    assert np.isneginf(ratio[2])
    log_w = pooled_log_weight([proposal, proposal], [1000, 3000])
    np.testing.assert_allclose(log_w(np.array([[-1.0]])), ratio[:1])
    with pytest.raises(ConfigError, match="shares"):
        Proposal([left, right], [0.5, 0.6])


def test_hpr_threshold_holds_the_requested_mass() -> None:
    net = _net(2).eval()
    ctx = np.zeros((1, 2), np.float32)
    tau = HighDensityRegion.threshold_of(net, ctx, eps=0.1, samples=20_000, seed=0)
    region = HighDensityRegion(net, ctx, tau)
    draws, _ = FlowPosterior(net).sample(20_000, ctx, seed=5)
    assert region.contains(draws[0]).mean() == pytest.approx(0.9, abs=0.01)
    wide = HighDensityRegion(
        net, ctx, HighDensityRegion.threshold_of(net, ctx, eps=0.1, temperature=2.0, seed=0)
    )
    assert wide.contains(draws[0]).mean() > 0.95  # a tempered HPR is broader


def test_flow_temperature_widens_the_draws_with_a_consistent_density() -> None:
    net = _net(2).eval()
    ctx = torch.zeros(1, 2)
    gen = torch.Generator().manual_seed(0)
    theta, lp = net.sample(4000, ctx, return_log_prob=True, generator=gen, temperature=2.0)
    again = net.log_prob_grouped(theta, ctx, temperature=2.0)
    torch.testing.assert_close(lp, again, atol=2e-4, rtol=1e-4)
    plain = net.sample(4000, ctx, generator=torch.Generator().manual_seed(0))
    assert float(theta.std()) > 1.5 * float(plain.std())
    with pytest.raises(ConfigError, match="temperature"):
        net.sample(10, ctx, temperature=0.0)


def test_refine_refuses_invalid_options(linear) -> None:
    toy, net = linear
    x_o = np.zeros((1, 2), np.float32)
    base = {"estimator": net, "rounds": 1, "simulations_per_round": 10, "epochs": 1}
    cases = [
        ({"rounds": 0}, "rounds >= 1"),
        ({"eps": 0.7}, "eps"),
        ({"temperature": -1.0}, "temperature"),
        ({"seeds": np.zeros((2, 3))}, "seeds must have shape"),
        ({"fit_options": {"epochs": 3}}, "must not set epochs"),
        ({"seed_share": 1.0}, "seed_share"),
        ({"estimator": object()}, "ConditionalINN"),
        ({"regions": "both"}, "regions must be one of estimate, corrected, union"),
    ]
    for extra, match in cases:
        with pytest.raises(ConfigError, match=match):
            refine(toy.simulate, toy.prior, x_o, **{**base, **extra})
    with pytest.raises(ConfigError, match="one row"):
        refine(toy.simulate, toy.prior, np.zeros((2, 2), np.float32), **base)


class _HalfPlane(GaussianPrior):
    """N(0, I) restricted to theta_0 > 0 (unnormalised; enough for the support check)."""

    def log_prob(self, theta: np.ndarray) -> np.ndarray:
        lp = super().log_prob(theta)
        return np.where(np.asarray(theta)[:, 0] > 0, lp, -np.inf)


def test_refine_refuses_seeds_outside_the_prior(linear) -> None:
    toy, net = linear
    with pytest.raises(ConfigError, match=r"seed 1 lies outside the prior's support"):
        refine(
            toy.simulate,
            _HalfPlane(2),
            np.zeros((1, 2), np.float32),
            estimator=net,
            rounds=1,
            simulations_per_round=10,
            epochs=1,
            seeds=np.array([[1.0, 0.0], [-1.0, 0.0]]),
        )


@pytest.mark.slow
def test_toy_benchmark_meets_the_gaussian_targets_and_finds_the_mode(capsys) -> None:
    """benchmarks/refine_toy.py as documented in docs/refine.md (about a minute)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "refine_toy.py"
    spec = importlib.util.spec_from_file_location("refine_toy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    gauss = bench.gaussian(2000, 20, 3)
    assert gauss["refined_shift"] <= 0.15
    assert gauss["refined_width_lo"] >= 0.88
    assert gauss["refined_width_hi"] <= 1.12
    assert gauss["amortized_shift"] > 1.0
    modes = bench.bimodal(2000, 20, 3)
    assert modes["no seeds"] < 0.02
    assert 0.25 < modes["seeded"] < 0.8
    assert "verdict" in capsys.readouterr().out

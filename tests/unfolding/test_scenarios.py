"""Pseudo-data scenarios (configured reweightings and a localized excess), the chi2 with the full
covariance, correlations, the cINN's toy covariance and the per-scenario verdict."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.config import from_dict
from hepflow.errors import ConfigError
from hepflow.unfolding import Unfolded, build_response, compare, fake_rate
from hepflow.unfolding.binning import histogram
from hepflow.unfolding.cinn import unfold_cinn
from hepflow.unfolding.report import verdict
from hepflow.unfolding.result import chi2_test, correlation
from hepflow.unfolding.study import Sample, ScenarioConfig, UnfoldingConfig, scenario_weights


def _sample(n: int, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    mtt = 340.0 + rng.exponential(180.0, n)
    top_pt = rng.gamma(2.0, 60.0, n)
    valid = rng.random(n) < 0.9
    gen = {"mtt": np.where(valid, mtt, np.nan), "top_pt": np.where(valid, top_pt, np.nan)}
    return Sample(np.ones(n), valid, np.ones(n, bool), gen, {}, None)


# --- chi2 with the full covariance ---------------------------------------------------------


def test_chi2_with_covariance_matches_a_hand_computed_case():
    cov = np.array([[4.0, 2.0, 0.0], [2.0, 9.0, -3.0], [0.0, -3.0, 16.0]])
    r = np.array([2.0, -3.0, 4.0])
    # by hand: det = 4 (144 - 9) - 2 (32) = 476; inverse = adj / det
    inv = np.array([[135.0, -32.0, -6.0], [-32.0, 64.0, 12.0], [-6.0, 12.0, 32.0]]) / 476.0
    np.testing.assert_allclose(inv @ cov, np.eye(3), atol=1e-12)  # the hand inverse is right
    # r^T inv r = (4 135 + 9 64 + 16 32 + 2 (6 32 - 8 6 - 12 12)) / 476
    expected = 1628.0 / 476.0
    assert expected == pytest.approx(r @ inv @ r)
    t = chi2_test(r, cov)
    assert t["chi2"] == pytest.approx(expected, rel=1e-12)
    assert (t["ndf"], t["inverse"]) == (3, "inverse")
    # the correlations change it: without them the chi2 is sum (r / sigma)^2
    assert chi2_test(r, np.diag(np.diag(cov)))["chi2"] == pytest.approx(1.0 + 1.0 + 1.0)
    # compare() uses the full covariance, plus the truth's variance on the diagonal
    u = Unfolded(np.array([10.0, 20.0, 30.0]) + r, cov)
    c = compare(u, np.array([10.0, 20.0, 30.0]))
    assert c["chi2"] == pytest.approx(expected, rel=1e-12)
    assert c["p_value"] == pytest.approx(_sf3(expected), rel=1e-9)
    np.testing.assert_allclose(np.diag(c["correlation"]), 1.0)
    assert c["correlation"][0][1] == pytest.approx(2.0 / 6.0)
    c2 = compare(u, np.array([10.0, 20.0, 30.0]), truth_var=np.array([1.0, 1.0, 1.0]))
    assert c2["chi2"] == pytest.approx(chi2_test(r, cov + np.eye(3))["chi2"])


def _sf3(x: float) -> float:
    """chi2 survival function for 3 degrees of freedom, in closed form."""
    from math import erfc, exp, pi, sqrt

    return erfc(sqrt(x / 2)) + sqrt(2 * x / pi) * exp(-x / 2)


def test_a_singular_covariance_uses_the_pseudo_inverse_and_says_so():
    cov = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])  # bins 0 and 1 fully correlated
    t = chi2_test(np.array([1.0, 1.0, 2.0]), cov)
    # direction (1, 1)/sqrt 2 has variance 2: (sqrt 2)^2 / 2 = 1; bin 2: 2^2 / 4 = 1
    assert t == {"chi2": pytest.approx(2.0), "ndf": 2, "inverse": "pseudo-inverse"}
    corr = correlation(cov)
    assert corr[0, 1] == pytest.approx(1.0)
    assert correlation(np.diag([1.0, 0.0]))[1].tolist() == [0.0, 0.0]  # a bin without variance


# --- scenarios -------------------------------------------------------------------------------


def test_exponential_scenario_reshapes_and_keeps_the_event_count():
    s = _sample(20_000)
    sc = ScenarioConfig(name="hard", kind="exponential", observable="mtt", slope=0.002)
    w = scenario_weights(s, sc)
    assert w.sum() == pytest.approx(s.n)
    assert np.all(w[~s.fiducial] == w[~s.fiducial][0])  # no particle level: one common factor
    valid = s.fiducial
    hi, lo = s.gen["mtt"][valid] > 800, s.gen["mtt"][valid] < 400
    assert w[valid][hi].mean() / w[valid][lo].mean() > np.exp(0.002 * 400)


def test_the_bump_is_a_localized_excess_of_the_configured_fraction():
    s = _sample(200_000, seed=3)
    sc = ScenarioConfig(name="bump", kind="bump", observable="mtt", centre=750.0, width=30.0, fraction=0.03)
    w = scenario_weights(s, sc)
    excess = w - s.weight
    assert excess.sum() == pytest.approx(0.03 * s.n, rel=1e-9)  # exactly the fraction, not renormalised
    x = s.gen["mtt"]
    near = np.abs(np.nan_to_num(x) - 750.0) < 2 * 30.0
    assert excess[near].sum() / excess.sum() > 0.95  # within two widths
    assert np.all(excess[np.abs(np.nan_to_num(x, nan=0.0) - 750.0) > 8 * 30.0] < 1e-12)
    # visible in the truth histogram: a peak over the smooth spectrum in the bin of the centre
    edges = np.arange(340.0, 1240.0, 30.0)
    nominal, _ = histogram(x[s.fiducial], edges)
    bumped, _ = histogram(x[s.fiducial], edges, weights=w[s.fiducial])
    ratio = bumped / nominal
    assert np.argmax(ratio) == np.searchsorted(edges, 750.0) - 1
    assert ratio.max() > 1.5
    assert np.allclose(ratio[edges[1:] < 550.0], 1.0)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (
            {"name": "b", "kind": "bump", "observable": "mtt", "centre": 750.0},
            r"\(bump\) needs width, fraction",
        ),
        ({"name": "e", "kind": "exponential", "observable": "mtt", "slope": 0.1}, "slope"),
        ({"name": "n", "kind": "nominal", "slope": 0.01}, r"\(nominal\) takes no slope"),
        ({"name": "x", "kind": "resonance"}, "'resonance' is not one of"),
        ({"name": "Bad Name", "kind": "nominal"}, "lower case"),
        (
            {
                "name": "b",
                "kind": "bump",
                "observable": "mtt",
                "centre": 750.0,
                "width": 30.0,
                "fraction": 0.9,
            },
            "fraction",
        ),
        (
            {"name": "b", "kind": "bump", "observable": "pt", "centre": 7.0, "width": 3.0, "fraction": 0.1},
            "'pt'",
        ),
    ],
)
def test_bad_scenarios_are_refused(table, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(UnfoldingConfig, {"scenarios": [table]}, where="u.toml")


def test_duplicate_or_no_scenarios_are_refused():
    with pytest.raises(ConfigError, match="'a' is used more than once"):
        from_dict(UnfoldingConfig, {"scenarios": [{"name": "a", "kind": "nominal"}] * 2})
    with pytest.raises(ConfigError, match="at least one"):
        from_dict(UnfoldingConfig, {"scenarios": []})


def test_cli_refuses_a_bad_scenario_with_one_line(tmp_path, capsys):
    from hepflow.cli import main

    config = tmp_path / "bad.toml"
    config.write_text('[[scenarios]]\nname = "bump"\nkind = "bump"\nobservable = "mtt"\ncentre = 750.0\n')
    out = tmp_path / "out"
    rc = main(
        [
            "unfold",
            "ttbar",
            "--train",
            "a.root",
            "--test",
            "b.root",
            "--output",
            str(out),
            "--config",
            str(config),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().count("\n") == 0, err
    assert "bad.toml" in err
    assert "[scenarios]" in err
    assert "needs width, fraction" in err
    assert "Traceback" not in err
    assert not out.exists()  # refused before anything is written


def test_shipped_scenarios():
    names = [s.name for s in UnfoldingConfig.from_file().scenarios]
    assert names == ["nominal", "reweighted", "mtt_reweighted", "mtt_bump"]


# --- the cINN's toy covariance ---------------------------------------------------------------


def test_cinn_toy_covariance_holds_data_and_posterior_width():
    rng = np.random.default_rng(4)
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    n = 4000
    x = rng.uniform(0.0, 4.0, n)
    everything = np.ones(n, bool)
    kw = {"passes_truth": everything, "passes_reco": everything}
    response = build_response(x, x, truth_edges=edges, reco_edges=edges, **kw)  # efficiency 1, no fakes
    fakes = fake_rate([x], [edges], **kw)
    # every event's posterior: uniform over its bin and the next one (the last bin's: itself)
    lo = np.floor(x)
    samples = (
        lo[None, :, None, None] + rng.integers(0, 2, (2, n, 64, 1)) * (lo < 3)[None, :, None, None] + 0.5
    )
    (u,) = unfold_cinn(
        samples, responses=[response], fake_rate=fakes, reco_values=[x], bootstrap=400, sim_toys=20, seed=1
    )
    c = u.components
    expected = c["data"] ** 2 + c["posterior"] ** 2 + c["simulation"] ** 2 + c["ensemble"] ** 2
    np.testing.assert_allclose(np.diag(u.covariance), expected, rtol=0.2)
    assert np.all(c["posterior"][:3] > 0.5 * c["data"][:3])  # the width is a real part of it
    corr = correlation(u.covariance)
    assert np.all(np.abs(corr[np.triu_indices(4, 1)]) < 0.25)  # Poisson copies: nearly independent bins


# --- verdict ---------------------------------------------------------------------------------


def test_verdict_names_the_method_that_closes_and_by_how_much():
    tables = {
        "top_pt": {
            "ibu": {"chi2": 4.4, "ndf": 7, "p_value": 0.73},
            "cinn": {"chi2": 20.2, "ndf": 7, "p_value": 0.005},
        },
        "mtt": {
            "ibu": {"chi2": 30.8, "ndf": 7, "p_value": 5e-5},
            "cinn": {"chi2": 6.3, "ndf": 7, "p_value": 0.5},
        },
    }
    line = verdict("reweighted", tables)
    assert line.startswith("reweighted: cINN closes best, chi2/ndf 26.5/14, then IBU 35.2/14 (1.3x)")
    assert "IBU closes in top_pt (p 0.73), fails in mtt (p 5e-05)" in line
    assert "cINN closes in mtt (p 0.5), fails in top_pt (p 0.005)" in line

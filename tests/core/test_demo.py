"""``hepflow demo`` end to end on tiny samples."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

from hepflow.cli import build_parser
from hepflow.cosmic.config import PARAMETERS
from hepflow.demo import _pseudo_experiments_match, run_demo
from hepflow.errors import ConfigError

#: tiny cosmic settings: the workflow, not a meaningful posterior
TINY_COSMIC = {
    "pseudo_experiments": 300,
    "cosmic_epochs": 1,
    "mcmc": {"n_steps": 100, "n_starts": 1, "n_candidates": 64},
    "posterior_samples": 500,
}
COSMIC_STEPS = (
    "generate cosmic",
    "process cosmic",
    "train cosmic",
    "infer cosmic",
    "mcmc cosmic",
    "report cosmic",
)
NEUTRINO_STEPS = ("generate ttbar", "process neutrino", "train neutrino", "infer neutrino", "report neutrino")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a busy 2-core machine two threads are much slower, not faster."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _check_cosmic(cosmic, n: int) -> None:
    """The cosmic outputs exist and are sane: support of the posterior, MCMC, report and plots."""
    chunks = sorted((cosmic / "features").glob("*.parquet"))
    assert sum(json.loads(c.with_suffix(".json").read_text())["rows"] for c in chunks) == n
    training = json.loads((cosmic / "model" / "training.json").read_text())
    assert training["pseudo_experiments"] == n
    assert training["epochs"] == 1
    assert (cosmic / "model" / "flow" / "model.safetensors").is_file()

    post = ak.from_parquet(cosmic / "infer_auger" / "samples.parquet")
    assert len(post) == TINY_COSMIC["posterior_samples"]
    np.testing.assert_allclose(ak.sum(post.weight), 1.0)  # importance weights of the samples
    ess = json.loads((cosmic / "infer_auger" / "summary.json").read_text())["importance"]["ess"]
    assert 1.0 <= ess <= TINY_COSMIC["posterior_samples"]
    theta = np.stack([ak.to_numpy(post[p]) for p in PARAMETERS], axis=1)
    assert np.isfinite(theta).all()
    assert np.all((theta[:, 0] >= -3) & (theta[:, 0] <= 3))
    assert np.all((theta[:, 1] >= 17.5) & (theta[:, 1] <= 19.5))
    np.testing.assert_allclose(theta[:, 2:].sum(axis=1), 1.0, atol=1e-9)
    assert np.all(theta[:, 2:] >= 0)

    mcmc = json.loads((cosmic / "mcmc_auger" / "summary.json").read_text())
    assert mcmc["n_steps"] == TINY_COSMIC["mcmc"]["n_steps"]
    report = json.loads((cosmic / "report" / "report.json").read_text())
    assert report["mcmc"]["source"] == str(cosmic / "mcmc_auger")
    assert set(report["cinn_vs_mcmc"]) == set(PARAMETERS)
    for plot in ("corner_auger.png", "corner_auger_wide.png"):
        assert (cosmic / "report" / plot).stat().st_size > 10_000


@pytest.mark.generation
def test_demo_runs_both_analyses_and_reports(tmp_path, capsys):
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    pytest.importorskip("emcee")
    report = run_demo(tmp_path, events=700, progress=False, **TINY_COSMIC)
    out = capsys.readouterr().out
    assert f"hepflow demo: outputs in {tmp_path.resolve()}" in out
    assert [s[0] for s in report.steps] == [*NEUTRINO_STEPS, *COSMIC_STEPS]
    for step in (*NEUTRINO_STEPS, *COSMIC_STEPS, "total"):
        assert f"  {step} " in out
    assert "cosmic/report (report.json, corner_auger.png, corner_auger_wide.png)" in out
    assert (tmp_path / "features_train" / "cutflow.json").is_file()
    assert (tmp_path / "models" / "flow" / "model.safetensors").is_file()
    assert list((tmp_path / "inference_cms_nanoaodv12").glob("*.root"))
    assert (tmp_path / "report" / "report.json").is_file()
    assert (tmp_path / "report" / "posterior_displays.png").is_file()
    _check_cosmic(tmp_path / "cosmic", TINY_COSMIC["pseudo_experiments"])


def test_demo_cosmic_only_and_rerun_with_another_size(tmp_path, capsys):
    """``--only cosmic`` needs no event generator; the sample is reused when its size and seed
    match, and a rerun with another size regenerates it and drops the stale chunks."""
    pytest.importorskip("emcee")
    report = run_demo(tmp_path, analyses=["cosmic"], progress=False, **TINY_COSMIC)
    assert [s[0] for s in report.steps] == list(COSMIC_STEPS)
    assert not (tmp_path / "ttbar_train.root").exists()
    cosmic = tmp_path / "cosmic"
    _check_cosmic(cosmic, TINY_COSMIC["pseudo_experiments"])
    assert "cosmic/pseudo_experiments.root (300)" in capsys.readouterr().out

    sample = cosmic / "pseudo_experiments.root"
    assert _pseudo_experiments_match(sample, 300, 1)
    assert not _pseudo_experiments_match(sample, 200, 1)
    assert not _pseudo_experiments_match(sample, 300, 2)
    marker = next((cosmic / "features").glob("*__*.json"))
    run_demo(tmp_path, analyses=["cosmic"], progress=False, **{**TINY_COSMIC, "pseudo_experiments": 200})
    assert _pseudo_experiments_match(sample, 200, 1)
    assert not marker.exists()  # the 0-300 chunk of the old sample is gone
    _check_cosmic(cosmic, 200)


def test_demo_options(tmp_path):
    args = build_parser().parse_args(["demo", "--only", "cosmic", "--pseudo-experiments", "2e3"])
    assert (args.only, args.pseudo_experiments, args.events) == ("cosmic", 2000, 4000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--only", "unfolding"])
    with pytest.raises(ConfigError, match="unknown demo analysis 'unfolding'"):
        run_demo(tmp_path, analyses=["unfolding"])
    with pytest.raises(ConfigError, match="at least 100 pseudo-experiments, got 50"):
        run_demo(tmp_path, analyses=["cosmic"], pseudo_experiments=50, progress=False)

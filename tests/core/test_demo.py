"""``hepflow demo`` end to end on tiny samples."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import pytest

from hepflow.cli import build_parser
from hepflow.cosmic.config import PARAMETERS
from hepflow.demo import NO_PRETRAINED, NO_PRETRAINED_COSMIC, _pseudo_experiments_match, run_demo
from hepflow.errors import ConfigError
from tests.conftest import TTBAR_HELDOUT, TTBAR_TRAIN

#: tiny cosmic settings: the workflow, not a meaningful posterior
TINY_COSMIC = {
    "pseudo_experiments": 300,
    "cosmic_epochs": 1,
    "mcmc": {"n_steps": 100, "n_starts": 1, "n_candidates": 64},
    "posterior_samples": 500,
}
COSMIC_STEPS = (
    "infer cosmic (pretrained)",
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
def test_demo_runs_both_analyses_and_reports(tmp_path, capsys, generated_ttbar):
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    pytest.importorskip("emcee")
    # the samples the other tests share (700 events of seed 1, 350 of seed 2) are the demo's own
    # training and held-out samples at these sizes, so the demo reuses them (generating them is
    # tested in tests/generate and by the slow demo tests)
    assert (TTBAR_TRAIN, TTBAR_HELDOUT) == ((700, 1), (350, 2))
    shutil.copy(generated_ttbar(*TTBAR_TRAIN), tmp_path / "ttbar_train.root")
    shutil.copy(generated_ttbar(*TTBAR_HELDOUT), tmp_path / "ttbar_test.root")
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
    assert (tmp_path / "report_cms_nanoaodv12" / "report.json").is_file()  # a report for the CMS sample
    # the verdicts: the shipped pretrained model's first, as the result, on both samples; then the
    # small model's, said to be a demonstration
    from hepflow.neutrino import pretrained

    assert pretrained.available()
    results = out.split("neutrino results: per metric, which direction is better, which method wins")[1]
    assert NO_PRETRAINED not in out
    lines = results.splitlines()
    assert lines[1].startswith("the result: the pretrained model ")
    assert lines[2].startswith(
        " on the held-out sample (350 events generated by this demo with seed 2, not one of this "
        "model's training seeds)"
    )
    small = results.index("the small demonstration model trained by this demo (")
    assert "it shows the training path, it is not the result" in results
    assert results[:small].count(" on the real CMS NanoAODv12 ttbar sample ") == 1
    assert results[small:].count(" on the real CMS NanoAODv12 ttbar sample ") == 1
    assert results.count("   pz CRPS (lower is better): ") == 8  # two lines per report, four reports
    assert results.count("   domain-shift check: ") >= 2
    # each report says whether its posterior is calibrated
    assert results.count("   calibration OK") + results.count("   CALIBRATION WARNING") >= 4
    for where in ("pretrained/report", "pretrained/report_cms_nanoaodv12", "report", "report_cms_nanoaodv12"):
        assert (tmp_path / where / "report.json").is_file()
    _check_cosmic(tmp_path / "cosmic", TINY_COSMIC["pseudo_experiments"])
    # the shipped cosmic model's posterior on the Auger data first, with its card's verdict against
    # the MCMC with the same nuisances; then the small model, said to be a demonstration
    from hepflow.cosmic import pretrained as cosmic_pretrained

    assert cosmic_pretrained.available()
    shipped = json.loads((tmp_path / "cosmic" / "pretrained_auger" / "summary.json").read_text())
    assert shipped["systematics"] is not None
    assert shipped["samples"] == TINY_COSMIC["posterior_samples"]
    cosmic = out.split("cosmic results on the Auger data")[1].splitlines()[1:]
    card = cosmic_pretrained.verified_card()
    assert cosmic[0].startswith("the pretrained cosmic model shipped with hepflow (400000 pseudo-experiments")
    assert cosmic[1].startswith("  its posterior: gamma = ")
    assert f"  its card, against the MCMC with the same nuisances: {card['auger']['lines'][0]}" in cosmic
    assert any(line.startswith("  for a physics result use the MCMC") for line in cosmic)
    small = next(i for i, line in enumerate(cosmic) if line.startswith("the small demonstration model"))
    assert "it shows the training path, it is not the result" in cosmic[small]
    assert NO_PRETRAINED_COSMIC not in out


# slow (60 s): the demo's pretrained-model path with a tiny model whose training seed is the demo's
# held-out seed (the default suite stays under 15 minutes; the demo test above runs the shipped model)
@pytest.mark.slow
@pytest.mark.generation
def test_demo_runs_the_pretrained_model_and_says_which_is_the_result(
    tiny_models, tmp_path, monkeypatch, capsys
):
    """With a pretrained model installed (the tiny one, its card naming training seed 2), the demo
    runs it on the held-out sample and the CMS sample and prints its verdicts first, as the result;
    the held-out sample's seed (2) is one of its training seeds, and the demo says so."""
    pytest.importorskip("pythia8mc")
    from hepflow.neutrino import pretrained
    from hepflow.neutrino.pretrained.card import install_model

    card = {"training_data": {"generated_events": 400, "seeds": [2], "events_used": 98}, "date": "today"}
    install_model(tiny_models, tmp_path / "shipped", card=card)
    monkeypatch.setattr(pretrained, "LOCATION", tmp_path / "shipped")
    report = run_demo(tmp_path / "demo", events=500, analyses=["neutrino"], progress=False)
    assert [s[0] for s in report.steps] == list(NEUTRINO_STEPS)
    out = capsys.readouterr().out
    results = out.split("neutrino results: per metric, which direction is better, which method wins")[1]
    assert NO_PRETRAINED not in out
    lines = results.splitlines()
    assert lines[1].startswith(f"the result: the pretrained model {tmp_path / 'shipped'}: trained on 98")
    assert lines[2].startswith(
        " on the held-out sample (250 events generated by this demo with seed 2, BUT one"
    )
    assert "   domain-shift check: " in results
    small = results.index("the small demonstration model trained by this demo (")
    assert results.count("   pz CRPS (lower is better): ") == 8  # two lines per report
    assert (
        results[:small].count("   pz residual RMS (lower is better): ") == 2
    )  # the pretrained model's, first
    for where in ("pretrained/report", "pretrained/report_cms_nanoaodv12", "report", "report_cms_nanoaodv12"):
        assert (tmp_path / "demo" / where / "report.json").is_file()


def test_demo_cosmic_only_and_rerun_with_another_size(tmp_path, capsys, monkeypatch):
    """``--only cosmic`` needs no event generator; the sample is reused when its size and seed
    match, and a rerun with another size regenerates it and drops the stale chunks."""
    pytest.importorskip("emcee")
    from hepflow.cosmic import pretrained

    # an installation without a pretrained cosmic model: the demo says so (the shipped model's
    # step is tested with the whole demo above)
    monkeypatch.setattr(pretrained, "LOCATION", tmp_path / "none")
    report = run_demo(tmp_path, analyses=["cosmic"], progress=False, **TINY_COSMIC)
    assert [s[0] for s in report.steps] == list(COSMIC_STEPS)
    assert not (tmp_path / "cosmic" / "pretrained_auger").exists()
    assert not (tmp_path / "ttbar_train.root").exists()
    cosmic = tmp_path / "cosmic"
    _check_cosmic(cosmic, TINY_COSMIC["pseudo_experiments"])
    out = capsys.readouterr().out
    assert "cosmic/pseudo_experiments.root (300)" in out
    # one verdict with its numbers, not the two posteriors side by side; the model check of both
    rep = json.loads((cosmic / "report" / "report.json").read_text())
    results = out.split(
        "cosmic results on the Auger data: cINN against MCMC, which to use, the model check\n"
    )[1]
    lines = results.splitlines()
    assert lines[0] == NO_PRETRAINED_COSMIC
    assert lines[1].startswith("the small demonstration model trained by this demo (300 pseudo-experiments")
    lines = lines[2:]
    assert lines[0] == f"  {rep['verdict']['line']}"
    assert lines[1].startswith(f"  {rep['verdict']['use']} result: gamma = ")
    assert lines[2].startswith("  model check (cINN posterior): total p ")
    assert any(line.startswith("  model check (MCMC posterior): total p ") for line in lines)
    assert "mcmc gamma" not in out
    assert "gamma =" not in out.split("cosmic results")[0]  # the steps no longer print estimates

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


# slow (50 s): an installation without a pretrained model (the default suite runs the shipped one)
@pytest.mark.slow
@pytest.mark.generation
def test_demo_without_a_pretrained_model_says_so(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pythia8mc")
    from hepflow.neutrino import pretrained

    monkeypatch.setattr(pretrained, "LOCATION", tmp_path / "absent")
    run_demo(tmp_path / "demo", events=500, analyses=["neutrino"], progress=False)
    out = capsys.readouterr().out
    results = out.split("neutrino results: per metric, which direction is better, which method wins")[1]
    assert results.splitlines()[1] == NO_PRETRAINED
    assert "the small demonstration model trained by this demo (" in results
    assert not (tmp_path / "demo" / "pretrained").exists()

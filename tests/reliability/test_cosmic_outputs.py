"""Cosmic outputs: the report takes only the MCMC of the Auger data it reports on, and no
posterior table with NaN or infinite values is written.

Before: the MCMC of another observation (a pseudo-experiment) was read into a report labelled
"Auger", exit 0. ``hepflow mcmc cosmic`` records what it ran on (observation, entry, lg_e_min)
in ``summary.json``; the report refuses any other before it loads the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hepflow.cli import main
from hepflow.cosmic.config import CosmicConfig
from hepflow.cosmic.generate import generate_cosmic
from hepflow.cosmic.mcmc import mcmc_cosmic
from hepflow.cosmic.report import make_report
from hepflow.errors import InputError, ModelError

#: a short MCMC: these tests need what it records, not a converged chain
SHORT = {
    "n_walkers": 12,
    "n_steps": 20,
    "check_every": 10,
    "n_starts": 1,
    "n_candidates": 16,
    "initial": "prior",
}


@pytest.fixture(scope="module")
def mcmc_of_a_pseudo_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mcmc")
    generate_cosmic(d / "pe.root", n=5, seed=2, progress=False)
    mcmc_cosmic(
        d / "pe.root", d / "mcmc", config=CosmicConfig.from_dict({"mcmc": SHORT}), entry=3, progress=False
    )
    return d / "mcmc"


def test_report_refuses_the_mcmc_of_another_observation(
    mcmc_of_a_pseudo_experiment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = json.loads((mcmc_of_a_pseudo_experiment / "summary.json").read_text())["settings"]
    assert settings["observation"].endswith("pe.root")
    assert (settings["entry"], settings["lg_e_min"]) == (3, 18.7)
    out = tmp_path / "report"
    argv = ["report", "cosmic", "--model", str(tmp_path / "model"), "--output", str(out)]
    rc = main([*argv, "--mcmc", str(mcmc_of_a_pseudo_experiment)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == (
        f"hepflow: error: {mcmc_of_a_pseudo_experiment} holds the MCMC of observation "
        f"{settings['observation']!r} (entry 3) above lg(E/eV) = 18.7, not of the Auger data above "
        "lg(E/eV) = 18.7 that this report is about (run `hepflow mcmc cosmic --observation auger` "
        "with the same config)"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"observation": "auger", "lg_e_min": 18.9},
            r"MCMC of observation 'auger' above lg\(E/eV\) = 18\.9, not of",
        ),
        (
            {"observation": "auger"},
            r"MCMC of observation 'auger', not of the Auger data above lg\(E/eV\) = 18\.7",
        ),
        (None, "MCMC of an observation it does not record, not of the Auger data"),
    ],
)
def test_report_refuses_an_auger_mcmc_of_other_bins_or_unrecorded(
    mcmc_of_a_pseudo_experiment: Path, tmp_path: Path, settings: dict | None, message: str
) -> None:
    mcmc = tmp_path / "mcmc"
    shutil.copytree(mcmc_of_a_pseudo_experiment, mcmc)
    summary = json.loads((mcmc / "summary.json").read_text())
    if settings is None:
        del summary["settings"]
    else:
        summary["settings"].update(settings)
        summary["settings"].pop("entry")
        if "lg_e_min" not in settings:
            del summary["settings"]["lg_e_min"]
    (mcmc / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError, match=message):
        make_report(tmp_path / "model", tmp_path / "report", mcmc_auger=mcmc)
    # the Auger MCMC above the config's threshold passes this check (then the missing model stops it)
    summary["settings"] = {"observation": "auger", "lg_e_min": 18.7}
    (mcmc / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ModelError, match="model") as err:
        make_report(tmp_path / "model", tmp_path / "report", mcmc_auger=mcmc)
    assert "MCMC" not in str(err.value)


def test_cosmic_posterior_with_non_finite_values_is_not_written(tmp_path: Path, monkeypatch) -> None:
    """A posterior whose draws are not finite (a broken model) is refused before any file is written."""
    import numpy as np

    from hepflow.cosmic import Binning, pipeline

    class Broken:
        binning = Binning.auger()

        def sample(self, n, obs, *, seed, log_prob):
            theta = np.full((1, n, 7), 0.2)
            theta[0, 1, 0] = np.nan
            return theta, np.full((1, n), -np.inf)

    monkeypatch.setattr(pipeline, "load_posterior", lambda *a, **k: Broken())
    with pytest.raises(ModelError, match=r"NaN or infinite values in gamma \(1 of 5\), log_prob \(5 of 5\)"):
        pipeline.infer(tmp_path / "model", "auger", output_dir=tmp_path / "out", samples=5)
    assert not (tmp_path / "out").exists()

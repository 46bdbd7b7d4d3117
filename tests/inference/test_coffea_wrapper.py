"""Posterior samples inside a user's coffea processor through coffea.ml_tools.torch_wrapper.

Also runs the code examples of the docs section "Posterior samples inside your own coffea
processor" (docs/scaleout.md) and of the README section "Using the processor in your own coffea
workflow" on the CMS NanoAOD sample.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import awkward as ak
import cloudpickle
import numpy as np
import pytest
import torch
import uproot

import hepflow
from hepflow.errors import InputError, ModelError
from hepflow.flows import Simplex
from hepflow.flows.summary import Combined, MLPSummary, SetSummary
from hepflow.inference.coffea import PosteriorSampler
from hepflow.inference.export import Sampler, export_torchscript
from hepflow.neutrino.features import FLAT_FEATURES, JET_FEATURES
from hepflow.outputs.chunks import chunk_seed

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("flat", "jets", "mask")
META = {"dataset": "ttbar", "filename": "a.root", "fileuuid": "", "entrystart": 0, "entrystop": 100}


@pytest.fixture(scope="module")
def model():
    summary = Combined(
        flat=MLPSummary(len(FLAT_FEATURES), 8, width=16),
        jets=SetSummary(len(JET_FEATURES), 8, width=16, heads=2),
    )
    m = hepflow.ConditionalINN(theta_dim=3, summary=summary, depth=2, width=16, seed=0)
    return m.eval()


@pytest.fixture(scope="module")
def sampler_file(model, tmp_path_factory):
    return str(export_torchscript(model, tmp_path_factory.mktemp("ts") / "sampler.pt"))


def _context(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    counts = rng.integers(0, 11, n)
    return {
        "flat": rng.normal(size=(n, len(FLAT_FEATURES))).astype(np.float32),
        "jets": rng.normal(size=(n, 10, len(JET_FEATURES))).astype(np.float32),
        "mask": np.arange(10)[None, :] < counts[:, None],
    }


def _eager(model, ctx, noise_seed, n, samples, latent_dim):
    noise = np.random.default_rng(noise_seed).standard_normal((n, samples, latent_dim)).astype(np.float32)
    with torch.no_grad():
        out = Sampler(model)(*(torch.as_tensor(ctx[k]) for k in KEYS), torch.as_tensor(noise))
    return out.numpy()


def test_wrapper_matches_eager_sampler(model, sampler_file):
    wrapper = PosteriorSampler(sampler_file, samples=16, latent_dim=3, theta_dim=3, seed=4)
    ctx = _context(25, np.random.default_rng(1))
    out = wrapper(*(ak.Array(ctx[k]) for k in KEYS))
    assert out.type.length == 25
    got = ak.to_numpy(out)
    assert got.shape == (25, 16, 3)
    # without a chunk identity: the noise of default_rng(seed)
    np.testing.assert_allclose(got, _eager(model, ctx, 4, 25, 16, 3), atol=1e-5)


def test_chunk_identity_seeds_the_noise(model, sampler_file):
    wrapper = PosteriorSampler(sampler_file, samples=8, latent_dim=3, theta_dim=3, seed=4)
    ctx = _context(20, np.random.default_rng(2))
    args = [ak.Array(ctx[k]) for k in KEYS]
    first = ak.to_numpy(wrapper(*args, chunk=META))
    np.testing.assert_allclose(first, _eager(model, ctx, chunk_seed(4, META), 20, 8, 3), atol=1e-5)
    # the same chunk again (a rerun, a retried task; another dataset name): the same samples
    np.testing.assert_array_equal(first, ak.to_numpy(wrapper(*args, chunk=dict(META, dataset="x"))))
    # numpy inputs give numpy samples, the same ones
    np.testing.assert_array_equal(first, wrapper(*(ctx[k] for k in KEYS), chunk=META))
    # other chunks of the same size: other noise
    for other in (
        dict(META, entrystart=100, entrystop=200),
        dict(META, filename="b.root"),
        dict(META, fileuuid="6c1e2c3a-0000-0000-0000-000000000001"),
    ):
        assert not np.isclose(first, ak.to_numpy(wrapper(*args, chunk=other))).any()
    # another seed: other noise; no chunk: the noise of the seed alone
    reseeded = PosteriorSampler(sampler_file, samples=8, latent_dim=3, theta_dim=3, seed=5)
    assert not np.isclose(first, ak.to_numpy(reseeded(*args, chunk=META))).any()
    assert not np.isclose(first, ak.to_numpy(wrapper(*args))).any()


def test_chunk_seed_is_stable():
    # a fixed value: the seed must not change between processes, machines or releases
    assert chunk_seed(1, META) == chunk_seed(1, dict(META))
    assert chunk_seed(1, {"filename": "a.root", "entrystart": 0, "entrystop": 100}) == chunk_seed(1, META)
    assert chunk_seed(1, dict(META, entrystart=np.int64(0))) == chunk_seed(1, META)
    assert chunk_seed(1, META) == 0x817BDD1BD3C9CFC652DECBF87B3EE647
    uuid = dict(META, fileuuid="6c1e2c3a-0000-0000-0000-000000000001")
    assert chunk_seed(1, uuid) == chunk_seed(1, dict(uuid, filename="root://other//a.root"))


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        ({"entrystart": 0, "entrystop": 10}, "neither 'fileuuid' nor 'filename'"),
        ({"filename": "a.root", "entrystart": 0}, "no 'entrystop'"),
        ({"filename": "a.root", "entrystart": 0.0, "entrystop": 10}, "entrystart must be a non-negative"),
        ({"filename": "a.root", "entrystart": 10, "entrystop": 0}, "entrystart 10 > entrystop 0"),
        ([("filename", "a.root")], "chunk must be a mapping"),
    ],
)
def test_bad_chunk_identity_is_refused(sampler_file, chunk, message):
    wrapper = PosteriorSampler(sampler_file, samples=2, latent_dim=3, theta_dim=3)
    ctx = _context(3, np.random.default_rng(0))
    with pytest.raises(InputError, match=re.escape(message)):
        wrapper(*(ctx[k] for k in KEYS), chunk=chunk)


def test_wrapper_handles_empty_chunks(sampler_file):
    wrapper = PosteriorSampler(sampler_file, samples=4, latent_dim=3, theta_dim=3)
    ctx = _context(0, np.random.default_rng(0))
    out = wrapper(*(ak.Array(ctx[k]) for k in KEYS), chunk=META)
    assert len(out) == 0
    assert ak.to_numpy(out).shape == (0, 4, 3)
    assert wrapper(*(ctx[k] for k in KEYS)).shape == (0, 4, 3)


@pytest.fixture(scope="module")
def simplex_file(tmp_path_factory):
    """theta = (x, y, three fractions summing to one): theta_dim 5, latent_dim 4."""
    torch.manual_seed(0)
    theta = torch.cat([torch.randn(300, 2), torch.distributions.Dirichlet(torch.ones(3)).sample((300,))], 1)
    ctx = theta[:, :2] + 0.1 * torch.randn(300, 2)
    model = hepflow.ConditionalINN(5, 2, depth=2, width=16, constraints=[Simplex([2, 3, 4])])
    hepflow.fit(model, theta, ctx, epochs=1, seed=0)
    assert (model.theta_dim, model.latent_dim) == (5, 4)
    return str(export_torchscript(model, tmp_path_factory.mktemp("simplex") / "sampler.pt"))


@pytest.mark.parametrize("n", [5, 0])
def test_simplex_model_output_shape(simplex_file, n):
    wrapper = PosteriorSampler(simplex_file, samples=6, latent_dim=4, theta_dim=5, seed=2)
    context = np.random.default_rng(n).normal(size=(n, 2)).astype(np.float32)
    out = ak.to_numpy(wrapper(ak.Array(context), chunk=META))
    assert out.shape == (n, 6, 5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[..., 2:].sum(axis=-1), 1.0, atol=1e-5)


def test_wrong_dimensions_are_refused(simplex_file):
    context = np.zeros((3, 2), np.float32)
    with pytest.raises(
        ModelError, match=r"returned shape \(3, 6, 5\), expected \(3, 6, 4\); check theta_dim"
    ):
        PosteriorSampler(simplex_file, samples=6, latent_dim=4, theta_dim=4)(context)
    with pytest.raises(ModelError, match="check latent_dim"):
        PosteriorSampler(simplex_file, samples=6, latent_dim=5, theta_dim=5)(context)
    with pytest.raises(InputError, match="theta_dim must be a positive integer"):
        PosteriorSampler(simplex_file, samples=6, latent_dim=4, theta_dim=0)
    with pytest.raises(InputError, match=r"context input 1 has 2 rows, expected 3"):
        PosteriorSampler(simplex_file, samples=6, latent_dim=4, theta_dim=5)(context, context[:2])


def test_pickled_sampler_reloads_the_model(model, sampler_file):
    wrapper = PosteriorSampler(sampler_file, samples=4, latent_dim=3, theta_dim=3, seed=1)
    ctx = _context(7, np.random.default_rng(3))
    before = wrapper(*(ctx[k] for k in KEYS), chunk=META)
    blob = cloudpickle.dumps(wrapper)  # what a coffea executor ships to its workers
    assert b"TorchScript" not in blob
    assert len(blob) < 10_000  # the model is not in it
    np.testing.assert_array_equal(cloudpickle.loads(blob)(*(ctx[k] for k in KEYS), chunk=META), before)


# -- the documented examples -------------------------------------------------------------------------


def python_blocks(markdown: Path, heading: str) -> list[str]:
    """The ```python blocks of the section ``heading`` (up to the next heading of its level)."""
    text = markdown.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    end = text.find("\n" + level + " ", start + len(heading))
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def exported(model, tmp_path, monkeypatch):
    """The working directory, with neutrino_sampler.pt of a small model (and load_models giving it)."""
    import hepflow.neutrino.model as neutrino_model
    from hepflow.posterior import FlowPosterior

    monkeypatch.setattr(neutrino_model, "load_models", lambda path: (FlowPosterior(model), None))
    monkeypatch.chdir(tmp_path)
    export_torchscript(model, "neutrino_sampler.pt")
    return tmp_path


def _run(code: str, namespace: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cross-references of the trimmed sample
        exec(compile(code, "<docs example>", "exec"), namespace)
    return namespace


def test_scaleout_docs_example(exported, nano_v12, capsys):
    export, analysis = python_blocks(
        ROOT / "docs" / "scaleout.md", "## Posterior samples inside your own coffea processor"
    )
    _run(export, {})
    assert capsys.readouterr().out.split() == ["3", "3"]
    # 200 events in chunks of 50: four chunks with their own noise
    code = analysis.replace("chunksize=100_000", "chunksize=50")
    first = _run(code, {"fileset": {"ttbar": [str(nano_v12)]}})["out"]["pz_median"].value
    again = _run(code, {"fileset": {"ttbar": [str(nano_v12)]}})["out"]["pz_median"].value
    assert len(first) > 20
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)  # reproducible chunk by chunk
    whole = _run(analysis, {"fileset": {"ttbar": [str(nano_v12)]}})["out"]["pz_median"].value
    assert len(whole) == len(first)
    assert not np.array_equal(whole, first)  # other chunks, other (equally valid) samples


def test_readme_example(exported, nano_v12):
    from tests.neutrino.test_contract import SELECTION, _events, select_objects

    blocks = python_blocks(ROOT / "README.md", "### Using the processor in your own coffea workflow")
    assert len(blocks) == 2
    run = _run(blocks[0], {"fileset": {"ttbar": [str(nano_v12)]}})
    assert run["selection"] == SELECTION
    assert run["selection"].btag_wp == 0.2783
    # four chunks on two worker processes: the 52 selected events of the sample, in order
    assert len(run["columns"]) == run["cutflow"]["finite inputs"] == 52
    assert (np.diff(ak.to_numpy(run["columns"].event).astype(np.int64)) != 0).all()
    assert run["sumw"] == pytest.approx(
        float(uproot.open(nano_v12)["Events"]["genWeight"].array(library="np").sum())
    )

    events = _events(nano_v12, entrystart=0, entrystop=200)
    events, lepton, jets = select_objects(events, SELECTION)
    ns = _run(blocks[1], {"events": events, "lepton": lepton, "jets": jets, "selection": SELECTION})
    assert ns["theta"].shape == (len(events), 128, 3)

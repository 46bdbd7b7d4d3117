"""CRPropa tables from the installed astrotools: layout, plain-array cache, propagation spot checks."""

from __future__ import annotations

import numpy as np
import pytest

from hepflow.cosmic import tables
from hepflow.cosmic.tables import TABLE_SPECIES, astrotools_data_dir, load_table
from hepflow.errors import ConfigError


def _index(edges: np.ndarray, value: float) -> int:
    return int(np.searchsorted(edges, value + 1e-9) - 1)


def test_layout() -> None:
    table = load_table("Gilmore12")
    assert table.shape == (5, 125, 100, 5, 125)
    np.testing.assert_allclose(table.lg_e_edges, np.linspace(18.5, 21.0, 126), atol=1e-9)
    np.testing.assert_allclose(table.distances, np.geomspace(1.0, 1500.0, 100), rtol=1e-9)
    assert table.index.dtype == np.int64
    assert np.all(np.diff(table.index) > 0)
    # nothing arrives with more energy than it was injected with
    for species in TABLE_SPECIES:
        dense = table.dense(species)
        i, _, _, j = np.nonzero(dense)
        assert np.all(j <= i)


def test_cache_round_trip_and_corruption(tmp_path) -> None:
    first = load_table("Kneiske04", cache=tmp_path)
    files = list(tmp_path.glob("crpropa3_Kneiske04_*.npz"))
    assert len(files) == 1
    with np.load(files[0], allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) == {"version", "lg_e_edges", "distances", "index", "values"}
    # the installed source file agrees with the sparse arrays
    with np.load(
        astrotools_data_dir() / "simulation" / "crpropa3__emin_18.5__emax_21.0__IRB_Kneiske04.npz",
        allow_pickle=True,  # the installed astrotools file, never a user path
    ) as raw:
        np.testing.assert_array_equal(first.dense("si"), raw["fractions"].item()["si"])
    # a truncated cache is refused (and then rebuilt by load_table)
    assert tables._read_cache(files[0], "Kneiske04") is not None
    files[0].write_bytes(files[0].read_bytes()[:1000])
    assert tables._read_cache(files[0], "Kneiske04") is None


def test_unknown_irb() -> None:
    with pytest.raises(ConfigError, match="'Franceschini'"):
        load_table("Franceschini")


def test_he_and_fe_spot_checks() -> None:
    """He at 10^20.2 eV from 10 Mpc arrives ~99.7 % as protons; Fe ~99 % as Fe (by number)."""
    table = load_table()
    i = _index(table.lg_e_edges, 20.2)
    d = int(np.argmin(np.abs(np.log(table.distances / 10.0))))
    he = table.dense("he")[i, d].sum(axis=-1)
    fe = table.dense("fe")[i, d].sum(axis=-1)
    assert he[0] / he.sum() == pytest.approx(0.997, abs=0.002)
    assert fe[4] / fe.sum() == pytest.approx(0.99, abs=0.005)
    # protons stay protons
    h = table.dense("h")[i, d].sum(axis=-1)
    assert h[0] == pytest.approx(h.sum())


def test_contract_distance_is_weighted_sum() -> None:
    table = load_table()
    w = np.zeros(100)
    w[[3, 40]] = [0.25, 0.75]
    contracted = table.contract_distance(w)
    fe = table.dense("fe")
    np.testing.assert_allclose(contracted[4], 0.25 * fe[:, 3] + 0.75 * fe[:, 40], rtol=1e-12)
    with pytest.raises(ConfigError, match=r"\(100,\)"):
        table.contract_distance(np.ones(99))

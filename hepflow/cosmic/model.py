"""The cosmic-ray forward model: source parameters -> expected and simulated Auger observables.

Chain (all precomputed into matrices at construction, so a batch of parameters costs a few
matrix products):

1. injection (:mod:`hepflow.cosmic.source`): numbers injected per species and CRPropa lg E bin
   (0.02 wide), integrated over each bin;
2. propagation (:mod:`hepflow.cosmic.propagation`): arriving numbers per charge group
   (A = 1, 4, 14, 28, 56) and lg E bin, for the chosen distance model and infrared background;
3. spectrum: arriving numbers summed into the spectrum bins, times the effective exposure
   (exposure / unfolding correction of the 2020 data, so that the model predicts raw counts;
   constant exposure above full efficiency). The normalisation J0 is free: the expected counts
   are scaled to a total ``n_spectrum`` (by default the reference observation's), which is the
   Poisson maximum-likelihood normalisation ``sum(n) / sum(mu_shape)``;
4. Xmax: per Xmax energy bin, each arriving (group, 0.02 lg E) cell contributes its generalized
   Gumbel distribution (evaluated at the cell centre), multiplied by the bin's acceptance
   (a function of *true* Xmax), folded with the bin's double-Gaussian resolution into 20 g/cm^2
   bins, normalised over the 100 bins. The true-Xmax integral uses cells of ``xmax_step``
   g/cm^2 (exact Gumbel CDF differences per cell).

``simulate`` draws Poisson spectrum counts and multinomial Xmax histograms with fixed numbers of
events per Xmax energy bin (by default those observed).

**Systematics** (``systematics=Systematics()``, :mod:`hepflow.cosmic.systematics`): the methods
also take (n, 9) batches whose last two columns are the nuisances ``nu_E`` (energy scale) and
``nu_X`` (Xmax scale). Rows whose nuisances are both zero, and (n, 7) batches, take exactly the
path above (bit for bit). Other rows: the arriving numbers are computed on cells extended below
``lg_e_min`` (an energy-scale shift up brings lower true energies into the fit range); each cell
is moved by ``lg(1 + energy_scale nu_E)`` and split between the reconstructed-energy bins by
overlap (uniform within the 0.02 cell), the Gumbel Xmax distribution staying at the cell's true
energy; the detector response per Xmax energy bin is folded onto ``xmax_step`` reconstructed
cells, and the reconstructed distribution is moved by ``sigma_X(E) nu_X`` (linear interpolation
of its cumulative on those cells) before it is summed into the 20 g/cm^2 bins.

Example:
    >>> model = ForwardModel()  # Auger binning above 10^18.7 eV, EPOS-LHC, homogeneous sources
    >>> theta = np.array([[0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0]])
    >>> mu = model.expected(theta)
    >>> mu["spectrum"].shape, mu["xmax"].shape
    ((1, 15), (1, 9, 100))
    >>> sim = model.simulate(np.repeat(theta, 1000, axis=0), rng=1)
    >>> sim["xmax"].sum(axis=-1)[0].tolist() == model.n_xmax.tolist()
    True
    >>> shifted = ForwardModel(systematics=Systematics())
    >>> nu = np.array([[0.0, 0.0], [1.0, 0.0]])  # nominal; energy scale +14 %
    >>> mu2 = shifted.expected(np.column_stack([np.repeat(theta, 2, axis=0), nu]))
    >>> bool(np.array_equal(mu2["spectrum"][0], mu["spectrum"][0]))
    True
"""

from __future__ import annotations

import numpy as np

from hepflow.cosmic.auger import load_spectrum, load_xmax, xmax_acceptance, xmax_resolution_matrix
from hepflow.cosmic.observation import Binning, Observation
from hepflow.cosmic.propagation import GROUP_MASSES, Propagation
from hepflow.cosmic.source import as_params, injection_weights
from hepflow.cosmic.systematics import Systematics, split_params
from hepflow.cosmic.xmax import HADRONIC_MODELS, gumbel_cdf
from hepflow.errors import ConfigError

__all__ = ["ForwardModel"]

_TOL = 1e-6
_CHUNK = 256  # parameter rows per block in arriving()


def _interp_rows(cum: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of ``cum`` (n, m + 1), given at integer positions 0 .. m, at
    fractional positions ``pos`` (n, k), clipped to [0, m]."""
    m = cum.shape[1] - 1
    x = np.clip(pos, 0.0, float(m))
    i = np.minimum(np.floor(x).astype(np.int64), m - 1)
    f = x - i
    lo = np.take_along_axis(cum, i, axis=1)
    hi = np.take_along_axis(cum, i + 1, axis=1)
    return lo + f * (hi - lo)


def _bin_index(centres: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the bin of each centre, -1 outside."""
    k = np.searchsorted(edges, centres, side="right") - 1
    return np.where((centres > edges[0]) & (centres < edges[-1]), k, -1)


class ForwardModel:
    """Expected and simulated spectrum counts and Xmax histograms for batches of parameters.

    Args:
        reference: the observation whose binning and event numbers the model reproduces
            (default: :meth:`Observation.from_auger` above 10^18.7 eV). Its binning must be an
            Auger binning (:meth:`Binning.auger`).
        hadronic_model: ``"EPOS-LHC"`` or ``"QGSJetII-04"`` (Gumbel parametrisation).
        irb: infrared background of the CRPropa table.
        distance: ``"homogeneous"`` source density, or a single distance in Mpc.
        d_min, d_max: range of the homogeneous source density in Mpc (default 1 .. 1500).
        unfolding: predict raw counts with the published unfolding correction (default) or use
            the bare exposure.
        n_nodes: Gauss-Legendre nodes per 0.02 injection bin.
        xmax_step: true-Xmax cell width in g/cm^2 for the detector folding.
        systematics: the energy-scale and Xmax-scale nuisances (module docstring); None: the
            methods take (n, 7) batches only.
    """

    def __init__(
        self,
        reference: Observation | None = None,
        *,
        hadronic_model: str = "EPOS-LHC",
        irb: str = "Gilmore12",
        distance: str | float = "homogeneous",
        d_min: float | None = None,
        d_max: float | None = None,
        unfolding: bool = True,
        n_nodes: int = 4,
        xmax_step: float = 2.0,
        systematics: Systematics | None = None,
    ) -> None:
        if hadronic_model not in HADRONIC_MODELS:
            raise ConfigError(
                f"unknown hadronic interaction model {hadronic_model!r}; "
                f"choose one of {', '.join(HADRONIC_MODELS)}"
            )
        ref = reference if reference is not None else Observation.from_auger()
        binning = ref.binning
        lg_e_min = float(binning.spectrum_edges[0])
        if binning != Binning.auger(lg_e_min=lg_e_min):
            raise ConfigError(
                "the forward model needs an Auger binning (Binning.auger(lg_e_min=...)): the detector "
                f"response is published per Auger energy bin; got spectrum edges {binning.spectrum_edges}"
            )
        self.binning = binning
        self.hadronic_model = hadronic_model
        self.n_spectrum = ref.n_spectrum
        self.n_xmax = ref.n_xmax.copy()
        self.n_nodes = int(n_nodes)
        self.propagation = Propagation.build(irb=irb, distance=distance, d_min=d_min, d_max=d_max)
        self.description = (
            f"{self.propagation.description}, {hadronic_model}, lg E >= {lg_e_min:g}, "
            f"{'raw counts (unfolding correction applied)' if unfolding else 'bare exposure'}"
        )

        edges = self.propagation.lg_e_edges
        # energies below lg_e_min neither contribute (arriving E <= injected E) nor are observed
        self._first = int(np.flatnonzero(np.abs(edges - lg_e_min) < _TOL)[0])
        self._inj_edges = edges[self._first :]
        centres = 0.5 * (self._inj_edges[1:] + self._inj_edges[:-1])
        self.lg_e_centers = centres
        m = self.propagation.matrix[:, self._first :, :, self._first :]
        n_s, n_i, n_c, n_j = m.shape
        self._matrix = np.ascontiguousarray(m.reshape(n_s * n_i, n_c * n_j))

        # spectrum: arriving cells -> spectrum bins, times the effective exposure
        spec = load_spectrum()
        n_e = binning.shape[0]
        exposure = (spec.effective_exposure if unfolding else spec.exposure)[-n_e:]
        k = _bin_index(centres, binning.spectrum_edges)
        agg = np.zeros((n_j, n_e))
        inside = k >= 0
        # arriving numbers are already integrated over each cell (flux x dE): only the exposure
        agg[inside, k[inside]] = exposure[k[inside]]
        self._spectrum_matrix = agg

        # Xmax: per energy bin, cells (group, lg E) -> reconstructed Xmax bins
        xmax = load_xmax()
        n_m, n_x = binning.shape[1:]
        res, acc = xmax.resolution[-n_m:], xmax.acceptance[-n_m:]
        if xmax_step <= 0 or not float(2000.0 / xmax_step).is_integer():
            raise ConfigError(f"xmax_step must divide 2000 g/cm^2, got {xmax_step}")
        t_edges = np.arange(0.0, 2000.0 + xmax_step / 2, xmax_step)
        t = 0.5 * (t_edges[1:] + t_edges[:-1])
        kx = _bin_index(centres, binning.xmax_energy_edges)
        ln_a = np.log(GROUP_MASSES)
        self._xmax_cells: list[np.ndarray] = []
        self._xmax_response: list[np.ndarray] = []
        for b in range(n_m):
            cells = np.flatnonzero(kx == b)
            cdf = gumbel_cdf(t_edges, centres[cells, None, None], ln_a[None, :, None], model=hadronic_model)
            mass = np.diff(cdf, axis=-1) * xmax_acceptance(t, *acc[b])  # (cells, groups, true X)
            fold = xmax_resolution_matrix(t, binning.xmax_edges, *res[b])  # (true X, reco X)
            resp = mass @ fold  # (cells, groups, reco X)
            self._xmax_cells.append(cells)
            self._xmax_response.append(np.ascontiguousarray(resp.transpose(1, 0, 2).reshape(-1, n_x)))
        self.systematics = systematics
        if systematics is not None:
            self._setup_systematics(systematics, exposure, res, acc, t_edges, xmax_step)
            s = systematics
            self.description += (
                f", systematics: energy scale {100 * s.energy_scale:g} %, Xmax scale {s.xmax_scale}"
                f"{'' if isinstance(s.xmax_scale, str) else ' g/cm^2'}, |nu| <= {s.nu_max:g}"
            )

    def _setup_systematics(
        self,
        syst: Systematics,
        exposure: np.ndarray,
        res: np.ndarray,
        acc: np.ndarray,
        t_edges: np.ndarray,
        xmax_step: float,
    ) -> None:
        """Precompute the extended cells and the fine Xmax responses of the nuisance path."""
        edges = self.propagation.lg_e_edges
        step = float(edges[1] - edges[0])
        if not np.allclose(np.diff(edges), step, atol=1e-9):
            raise ConfigError("energy-scale systematics need equal lg E cells in the propagation tables")
        low_shift, high_shift = syst.lg_e_shift_range
        lg_e_min = float(self.binning.spectrum_edges[0])
        first = self._first - int(np.ceil(high_shift / step - 1e-9))
        if first < 0:
            raise ConfigError(
                f"systematics: an energy scale up to +{100 * syst.energy_scale * syst.nu_max:.0f} % needs "
                f"the propagation tables down to lg E = {lg_e_min - high_shift:.2f}, they start at "
                f"{edges[0]:.2f}: raise model.lg_e_min or lower systematics.energy_scale or nu_max"
            )
        if edges[-1] < self.binning.spectrum_edges[-1] - low_shift:
            raise ConfigError(
                f"systematics: an energy scale down to {100 * syst.energy_scale * syst.nu_max:.0f} % lower "
                f"needs the propagation tables up to lg E = {self.binning.spectrum_edges[-1] - low_shift:.2f}"
            )
        x_edges = self.binning.xmax_edges
        on_grid = (x_edges - t_edges[0]) / xmax_step
        if not np.allclose(on_grid, np.rint(on_grid)):
            raise ConfigError(f"systematics: the Xmax bin edges must lie on the xmax_step={xmax_step} grid")
        self._ext_first = first
        self._ext_step = step
        self._ext_edges = edges[first:]
        m = self.propagation.matrix[:, first:, :, first:]
        n_s, n_i, n_c, n_j = m.shape
        self._ext_matrix = np.ascontiguousarray(m.reshape(n_s * n_i, n_c * n_j))
        lo, hi = self._ext_edges[:-1], self._ext_edges[1:]
        centres = 0.5 * (lo + hi)
        self._exposure = np.asarray(exposure, dtype=float)
        self._x_pos = (x_edges - t_edges[0]) / xmax_step  # coarse Xmax edges on the fine grid
        t = 0.5 * (t_edges[1:] + t_edges[:-1])
        ln_a = np.log(GROUP_MASSES)
        e_x = self.binning.xmax_energy_edges
        self._syst_cells: list[np.ndarray] = []
        self._syst_response: list[np.ndarray] = []
        self._syst_offset: list[int] = []
        for b in range(e_x.size - 1):
            cells = np.flatnonzero((hi + high_shift > e_x[b]) & (lo + low_shift < e_x[b + 1]))
            cdf = gumbel_cdf(
                t_edges, centres[cells, None, None], ln_a[None, :, None], model=self.hadronic_model
            )
            mass = np.diff(cdf, axis=-1) * xmax_acceptance(t, *acc[b])  # (cells, groups, true X)
            fold = xmax_resolution_matrix(t, t_edges, *res[b])  # (true X, fine reco X)
            resp = (mass @ fold).transpose(1, 0, 2).reshape(-1, t.size)
            # drop the reconstructed cells without response (below ~450 and above ~1900 g/cm^2):
            # their cumulative is 0 before and the total after, which the clipped interpolation gives
            col = resp.sum(axis=0)
            used = np.flatnonzero(col > 1e-15 * col.max())
            k0, k1 = max(int(used[0]) - 1, 0), min(int(used[-1]) + 2, t.size)
            self._syst_cells.append(cells)
            self._syst_response.append(np.ascontiguousarray(resp[:, k0:k1]))
            self._syst_offset.append(k0)
        self._xmax_sigma = syst.xmax_sigma(e_x)
        self._xmax_step = float(xmax_step)
        self._t0 = float(t_edges[0])

    # ------------------------------------------------------------------ building blocks
    def arriving(self, params: np.ndarray) -> np.ndarray:
        """Arriving numbers (n, 5 groups, n_cells) per 0.02 lg E cell above ``lg_e_min``, relative units."""
        p = as_params(params)
        out = np.empty((p.shape[0], self._matrix.shape[1]))
        # chunks keep the (chunk, 5, cells, nodes) temporaries in cache: ~3x faster than one block
        for start in range(0, p.shape[0], _CHUNK):
            rows = slice(start, start + _CHUNK)
            inj = injection_weights(p[rows], self._inj_edges, n_nodes=self.n_nodes)
            out[rows] = inj.reshape(inj.shape[0], -1) @ self._matrix
        return out.reshape(p.shape[0], len(GROUP_MASSES), -1)

    def _arriving_extended(self, p: np.ndarray) -> np.ndarray:
        """Like :meth:`arriving` on the cells extended below ``lg_e_min`` (nuisance path)."""
        out = np.empty((p.shape[0], self._ext_matrix.shape[1]))
        for start in range(0, p.shape[0], _CHUNK):
            rows = slice(start, start + _CHUNK)
            inj = injection_weights(p[rows], self._ext_edges, n_nodes=self.n_nodes)
            out[rows] = inj.reshape(inj.shape[0], -1) @ self._ext_matrix
        return out.reshape(p.shape[0], len(GROUP_MASSES), -1)

    def _shifted(self, p: np.ndarray, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spectrum shape (n, n_E) and Xmax pdf (n, n_M, n_X) with nuisances ``nu`` (n, 2)."""
        syst = self.systematics
        assert syst is not None
        n = p.shape[0]
        a = self._arriving_extended(p)
        delta = syst.lg_e_shift(nu[:, 0])[:, None]  # (n, 1)
        # spectrum: cumulative arriving numbers at the cell edges, read at the shifted bin edges
        cum = np.concatenate([np.zeros((n, 1)), np.cumsum(a.sum(axis=1), axis=1)], axis=1)
        pos = (self.binning.spectrum_edges[None, :] - delta - self._ext_edges[0]) / self._ext_step
        mu = np.diff(_interp_rows(cum, pos), axis=1) * self._exposure[None, :]
        total = mu.sum(axis=1, keepdims=True)
        spec = np.divide(mu, total, out=np.zeros_like(mu), where=total > 0)
        # Xmax: per reconstructed-energy bin, overlap weights of the moved cells, fine response,
        # then the Xmax-scale shift on the fine reconstructed grid
        e_x = self.binning.xmax_energy_edges
        lo, hi = self._ext_edges[:-1], self._ext_edges[1:]
        shift = syst.xmax_shift(nu[:, 1], *self._xmax_sigma)  # (n, n_M) g/cm^2
        n_m, n_x = self.binning.shape[1:]
        out = np.empty((n, n_m, n_x))
        blocks = zip(self._syst_cells, self._syst_response, self._syst_offset, strict=True)
        for b, (cells, resp, k0) in enumerate(blocks):
            c_lo, c_hi = lo[cells] + delta, hi[cells] + delta
            w = np.clip(np.minimum(c_hi, e_x[b + 1]) - np.maximum(c_lo, e_x[b]), 0.0, None) / (c_hi - c_lo)
            fine = (a[:, :, cells] * w[:, None, :]).reshape(n, -1) @ resp  # (n, fine reco X)
            cum_x = np.concatenate([np.zeros((n, 1)), np.cumsum(fine, axis=1)], axis=1)
            pos_x = self._x_pos[None, :] - k0 - shift[:, b, None] / self._xmax_step
            out[:, b] = np.diff(_interp_rows(cum_x, pos_x), axis=1)
        total = out.sum(axis=-1, keepdims=True)
        pdf = np.divide(out, total, out=np.full_like(out, 1.0 / n_x), where=total > 0)
        return spec, pdf

    def predict(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spectrum shape (n, n_E) (sum 1) and Xmax pdf (n, n_M, n_X) (sum 1 per energy bin) for
        (n, 7) parameters, or (n, 9) with the nuisances when the model has ``systematics``.

        Rows without nuisances or with both at zero are computed exactly as without systematics.
        """
        p, nu = split_params(params, nuisances=self.systematics is not None)
        p = as_params(p)
        if nu is None or not np.any(nu):
            a = self.arriving(p)
            return self.spectrum_shape(p, arriving=a), self.xmax_pdf(p, arriving=a)
        assert self.systematics is not None
        bad = np.flatnonzero(~self.systematics.in_support(nu))
        if bad.size:
            raise ConfigError(
                f"nuisance parameters row {bad[0]} = {nu[bad[0]].tolist()} are outside "
                f"|nu| <= {self.systematics.nu_max:g}"
            )
        n, (n_e, n_m, n_x) = p.shape[0], self.binning.shape
        spec, pdf = np.empty((n, n_e)), np.empty((n, n_m, n_x))
        moved = np.any(nu != 0, axis=1)
        if (~moved).any():
            a = self.arriving(p[~moved])
            spec[~moved] = self.spectrum_shape(p[~moved], arriving=a)
            pdf[~moved] = self.xmax_pdf(p[~moved], arriving=a)
        spec[moved], pdf[moved] = self._shifted(p[moved], nu[moved])
        return spec, pdf

    def spectrum_shape(self, params: np.ndarray, *, arriving: np.ndarray | None = None) -> np.ndarray:
        """Expected spectrum counts normalised to sum 1, shape (n, n_E).

        With ``arriving`` (from :meth:`arriving`) ``params`` are the 7 source parameters; without
        it also (n, 9) with nuisances (:meth:`predict`).
        """
        if arriving is None and self.systematics is not None:
            return self.predict(params)[0]
        a = self.arriving(params) if arriving is None else arriving
        mu = a.sum(axis=1) @ self._spectrum_matrix
        total = mu.sum(axis=1, keepdims=True)
        return np.divide(mu, total, out=np.zeros_like(mu), where=total > 0)

    def xmax_pdf(self, params: np.ndarray, *, arriving: np.ndarray | None = None) -> np.ndarray:
        """Predicted Xmax distribution per energy bin, each normalised over its bins: (n, n_M, n_X).

        ``params`` as in :meth:`spectrum_shape`.
        """
        if arriving is None and self.systematics is not None:
            return self.predict(params)[1]
        a = self.arriving(params) if arriving is None else arriving
        n, n_m, n_x = a.shape[0], *self.binning.shape[1:]
        out = np.empty((n, n_m, n_x))
        for b, (cells, resp) in enumerate(zip(self._xmax_cells, self._xmax_response, strict=True)):
            out[:, b] = a[:, :, cells].reshape(n, -1) @ resp
        total = out.sum(axis=-1, keepdims=True)
        return np.divide(out, total, out=np.full_like(out, 1.0 / n_x), where=total > 0)

    def composition(self, params: np.ndarray) -> np.ndarray:
        """Arriving charge-group fractions per Xmax energy bin (before acceptance): (n, n_M, 5)."""
        a = self.arriving(params)
        out = np.stack([a[:, :, cells].sum(axis=-1) for cells in self._xmax_cells], axis=1)
        total = out.sum(axis=-1, keepdims=True)
        return np.divide(out, total, out=np.zeros_like(out), where=total > 0)

    def mean_ln_a(self, params: np.ndarray) -> np.ndarray:
        """Mean ln A of the arriving particles per Xmax energy bin (before acceptance): (n, n_M)."""
        return self.composition(params) @ np.log(GROUP_MASSES)

    # ------------------------------------------------------------------ public interface
    def expected(
        self,
        params: np.ndarray,
        *,
        n_spectrum: float | None = None,
        n_xmax: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Expected counts: ``"spectrum"`` (n, n_E) summing to ``n_spectrum`` and ``"xmax"`` (n, n_M, n_X)
        summing to ``n_xmax`` per energy bin (defaults: the reference observation's numbers).
        ``params``: (n, 7), or (n, 9) with the nuisances (model with ``systematics``).
        """
        spec, pdf = self.predict(params)
        n_s = self.n_spectrum if n_spectrum is None else float(n_spectrum)
        n_x = self.n_xmax if n_xmax is None else np.asarray(n_xmax, dtype=float)
        return {"spectrum": n_s * spec, "xmax": n_x[:, None] * pdf}

    def simulate(
        self,
        params: np.ndarray,
        rng: np.random.Generator | int | None = None,
        *,
        n_spectrum: float | None = None,
        n_xmax: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Pseudo-experiments: Poisson spectrum counts ``"spectrum"`` (n, n_E) with mean
        ``n_spectrum`` x shape, multinomial Xmax histograms ``"xmax"`` (n, n_M, n_X) with
        ``n_xmax`` events per energy bin. Deterministic for a given seed or generator state.
        """
        gen = np.random.default_rng(rng)
        n_s = self.n_spectrum if n_spectrum is None else float(n_spectrum)
        counts = self.n_xmax if n_xmax is None else np.asarray(n_xmax, dtype=float)
        if (
            counts.shape != self.n_xmax.shape
            or np.any(counts < 0)
            or not np.allclose(counts, np.rint(counts))
        ):
            raise ConfigError(
                f"n_xmax must be {self.n_xmax.shape[0]} non-negative integers "
                f"(one per Xmax energy bin), got {counts}"
            )
        spec, pdf = self.predict(params)
        pdf /= pdf.sum(axis=-1, keepdims=True)
        return {
            "spectrum": gen.poisson(n_s * spec),
            "xmax": gen.multinomial(np.rint(counts).astype(np.int64), pdf),
        }

    def observation(self, simulated: dict[str, np.ndarray], index: int = 0) -> Observation:
        """One pseudo-experiment of :meth:`simulate` (or :meth:`expected`) as an :class:`Observation`."""
        return Observation(self.binning, simulated["spectrum"][index], simulated["xmax"][index])

    def __repr__(self) -> str:
        return f"ForwardModel({self.description})"

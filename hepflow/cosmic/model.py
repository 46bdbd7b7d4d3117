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

Example:
    >>> model = ForwardModel()  # Auger binning above 10^18.7 eV, EPOS-LHC, homogeneous sources
    >>> theta = np.array([[0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0]])
    >>> mu = model.expected(theta)
    >>> mu["spectrum"].shape, mu["xmax"].shape
    ((1, 15), (1, 9, 100))
    >>> sim = model.simulate(np.repeat(theta, 1000, axis=0), rng=1)
    >>> sim["xmax"].sum(axis=-1)[0].tolist() == model.n_xmax.tolist()
    True
"""

from __future__ import annotations

import numpy as np

from hepflow.cosmic.auger import load_spectrum, load_xmax, xmax_acceptance, xmax_resolution_matrix
from hepflow.cosmic.observation import Binning, Observation
from hepflow.cosmic.propagation import GROUP_MASSES, Propagation
from hepflow.cosmic.source import as_params, injection_weights
from hepflow.cosmic.xmax import HADRONIC_MODELS, gumbel_cdf
from hepflow.errors import ConfigError

__all__ = ["ForwardModel"]

_TOL = 1e-6
_CHUNK = 256  # parameter rows per block in arriving()


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

    def spectrum_shape(self, params: np.ndarray, *, arriving: np.ndarray | None = None) -> np.ndarray:
        """Expected spectrum counts normalised to sum 1, shape (n, n_E)."""
        a = self.arriving(params) if arriving is None else arriving
        mu = a.sum(axis=1) @ self._spectrum_matrix
        total = mu.sum(axis=1, keepdims=True)
        return np.divide(mu, total, out=np.zeros_like(mu), where=total > 0)

    def xmax_pdf(self, params: np.ndarray, *, arriving: np.ndarray | None = None) -> np.ndarray:
        """Predicted Xmax distribution per energy bin, each normalised over its bins: (n, n_M, n_X)."""
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
        """
        a = self.arriving(params)
        n_s = self.n_spectrum if n_spectrum is None else float(n_spectrum)
        n_x = self.n_xmax if n_xmax is None else np.asarray(n_xmax, dtype=float)
        return {
            "spectrum": n_s * self.spectrum_shape(params, arriving=a),
            "xmax": n_x[:, None] * self.xmax_pdf(params, arriving=a),
        }

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
        p = as_params(params)
        a = self.arriving(p)
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
        pdf = self.xmax_pdf(p, arriving=a)
        pdf /= pdf.sum(axis=-1, keepdims=True)
        return {
            "spectrum": gen.poisson(n_s * self.spectrum_shape(p, arriving=a)),
            "xmax": gen.multinomial(np.rint(counts).astype(np.int64), pdf),
        }

    def observation(self, simulated: dict[str, np.ndarray], index: int = 0) -> Observation:
        """One pseudo-experiment of :meth:`simulate` (or :meth:`expected`) as an :class:`Observation`."""
        return Observation(self.binning, simulated["spectrum"][index], simulated["xmax"][index])

    def __repr__(self) -> str:
        return f"ForwardModel({self.description})"

"""Example: hepflow's neutrino feature processor in coffea's dask mode.

The same processor as ``neutrino_features.py``, run the coffea 2025+ way: ``preprocess`` the
fileset into steps, ``apply_to_fileset`` builds a lazy dask-awkward task graph (nothing is read
yet; only the branches the selection uses will be), ``dask_awkward.to_parquet`` writes the
columns one file per partition, and ``dask.compute`` computes the cutflow sums. The
processor's ``postprocess`` turns the computed output into what ``processor.Runner`` gives::

    python processors/neutrino_dask.py tests/samples/nano_tt_v12.root [OUTPUT_DIR]

Needs dask-awkward (``pip install "hepflow[distributed]"``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import dask
import dask_awkward as dak
from coffea.dataset_tools import apply_to_fileset, preprocess

from hepflow.config import shipped_config
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.selection import NeutrinoSelection


def run(
    files: Sequence[str],
    *,
    dataset: str = "ttbar",
    step_size: int = 100_000,
    output: str | None = None,
    scheduler: str = "sync",
) -> dict[str, Any]:
    """The processor's output for ``files`` in dask mode, computed: ``{dataset: {"columns",
    "cutflow", "cutflow_weighted", "sumw", "sumw2"}}`` as from ``processor.Runner``; with
    ``output`` the columns are also written there as parquet (one file per partition)."""
    processor = NeutrinoFeatureProcessor(NeutrinoSelection.from_file(shipped_config("neutrino")))
    fileset = {dataset: {"files": {str(f): "Events" for f in files}}}
    with dask.config.set(scheduler=scheduler):
        steps, _ = preprocess(fileset, step_size=step_size, align_clusters=False)
        lazy = apply_to_fileset(processor, steps)  # {dataset: processor.process(events)}
        out = {name: result[name] for name, result in lazy.items()}
        if output is not None:
            dak.to_parquet(out[dataset]["columns"], output)
        (computed,) = dask.compute(out)
    return processor.postprocess(computed)


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = run(argv[:1], output=argv[1] if len(argv) > 1 else None)["ttbar"]
    cutflow, weighted = out["cutflow"], out["cutflow_weighted"]
    print(f"{'step':<20} {'events':>8} {'sum of weights':>16}")
    for step in cutflow.axes[0]:
        print(f"{step:<20} {cutflow[step]:>8.0f} {weighted[step].value:>16.6g}")
    print(f"{len(out['columns'])} selected events; columns: {', '.join(out['columns'].fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

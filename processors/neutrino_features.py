"""Example: hepflow's neutrino feature processor inside your own coffea workflow.

hepflow's coffea processors live in its analysis packages (``hepflow.neutrino.processor``,
``hepflow.neutrino.inference_processor``, ``hepflow.cosmic.processor``,
``hepflow.unfolding.processor``); this folder holds examples of using them from a workflow of
your own. Run it on NanoAOD files::

    python processors/neutrino_features.py tests/samples/nano_tt_v12.root

It builds a fileset, runs :class:`~hepflow.neutrino.processor.NeutrinoFeatureProcessor` with the
selection of the shipped neutrino config (the one hepflow's trained models expect) through your
own :class:`coffea.processor.Runner` (any executor and chunk size give the same rows), and prints
the cutflow (events and sum of generator weights per step) and the feature columns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from coffea import processor
from coffea.nanoevents import NanoAODSchema

from hepflow.config import shipped_config
from hepflow.neutrino.processor import NeutrinoFeatureProcessor
from hepflow.neutrino.selection import NeutrinoSelection


def run(
    files: Sequence[str], *, dataset: str = "ttbar", executor: Any = None, chunksize: int = 100_000
) -> dict[str, Any]:
    """The processor's output for ``files``: ``{dataset: {"columns", "cutflow", "cutflow_weighted",
    "sumw", "sumw2"}}``, the chunks concatenated in file and entry order."""
    fileset = {dataset: {"files": {str(f): "Events" for f in files}}}
    selection = NeutrinoSelection.from_file(shipped_config("neutrino"))
    runner = processor.Runner(
        executor or processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=chunksize
    )
    return runner(fileset, NeutrinoFeatureProcessor(selection), treename="Events")


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = run(argv)["ttbar"]
    cutflow, weighted = out["cutflow"], out["cutflow_weighted"]
    print(f"{'step':<20} {'events':>8} {'sum of weights':>16}")
    for step in cutflow.axes[0]:
        print(f"{step:<20} {cutflow[step]:>8.0f} {weighted[step].value:>16.6g}")
    print(f"{len(out['columns'])} selected events; columns: {', '.join(out['columns'].fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

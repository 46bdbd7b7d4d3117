"""``hepflow demo``: the main job on the embedded default data, end to end, in minutes on a CPU.

Steps (each one a library call that the command line also exposes):

1. generate a small semileptonic ttbar sample with Pythia 8 and the fast CMS-like detector
   (``hepflow generate ttbar``), written as NanoAOD;
2. run the neutrino feature processor over it and over the real CMS NanoAOD ttbar sample
   shipped with the package's tests (``hepflow process neutrino``);
3. print a summary saying where every output is.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from hepflow.errors import HepflowError


@dataclass
class DemoReport:
    """What the demo wrote, step by step."""

    output: Path
    steps: list[tuple[str, float, str]] = field(default_factory=list)

    def add(self, name: str, seconds: float, where: str) -> None:
        self.steps.append((name, seconds, where))

    def summary(self) -> str:
        width = max((len(s[0]) for s in self.steps), default=0)
        lines = [f"hepflow demo: outputs in {self.output.resolve()}"]
        lines += [f"  {name:<{width}}  {sec:7.1f} s  {where}" for name, sec, where in self.steps]
        return "\n".join(lines)


def run_demo(
    output: str | os.PathLike[str], *, events: int = 2000, seed: int = 1, progress: bool = True
) -> DemoReport:
    """Run every demo step into ``output`` and print the summary; returns the report."""
    from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor
    from processors.neutrino import NeutrinoFeatureProcessor

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)

    try:
        from hepflow.generate.ttbar import generate_ttbar
    except ImportError as err:  # pythia8mc / fastjet missing
        raise HepflowError(
            f"the demo needs the [generate] extra: pip install 'hepflow[generate]' ({err})"
        ) from err

    sample = out / "ttbar_generated.root"
    t0 = time.perf_counter()
    if not sample.exists():
        generate_ttbar(sample, events=events, seed=seed, progress=progress)
    report.add("generate ttbar", time.perf_counter() - t0, str(sample))

    inputs = [sample]
    cms = _cms_sample()
    if cms is not None:
        inputs.append(cms)
    t0 = time.perf_counter()
    fileset = {
        "ttbar_generated": build_fileset([sample])["dataset"],
        **({"ttbar_cms_nanoaodv12": build_fileset([cms])["dataset"]} if cms else {}),
    }
    features = out / "features"
    result = run_processor(
        NeutrinoFeatureProcessor(),
        fileset,
        features,
        RunConfig(chunksize=max(events // 2, 1), formats=("parquet", "root"), progress=progress),
    )
    flows = {name: cutflow_to_dict(h) for name, h in result["cutflow_by_dataset"].items()}
    selected = ", ".join(f"{name}: {flow['b jets']}/{flow['all']}" for name, flow in sorted(flows.items()))
    report.add("process neutrino", time.perf_counter() - t0, f"{features} (selected {selected})")
    print(report.summary())
    return report


def _cms_sample() -> Path | None:
    """The real CMS NanoAODv12 ttbar sample from the source tree, when running from a checkout."""
    path = Path(__file__).resolve().parent.parent / "tests" / "samples" / "nano_tt_v12.root"
    return path if path.is_file() else None

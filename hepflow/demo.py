"""``hepflow demo``: the main job on the embedded default data, end to end, in minutes on a CPU.

Steps (each one a library call that the command line also exposes):

1. generate a small semileptonic ttbar training sample and a held-out test sample with Pythia 8
   and the fast CMS-like detector, written as NanoAOD (``hepflow generate ttbar``);
2. run the neutrino feature processor over them (``hepflow process neutrino``);
3. train a small cINN and the regression baseline (``hepflow train neutrino``);
4. write posterior columns for the held-out sample and for the real CMS NanoAOD ttbar sample
   shipped with the tests (``hepflow infer neutrino``);
5. write the comparison report with its plots (``hepflow report neutrino``);
6. print a summary saying where every output is.

The sample is small, so the numbers show the workflow, not the physics reach: the analysis
config (``analyses/ttbar_neutrino/config.toml``) and the README give the full-size commands.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from hepflow.errors import HepflowError

#: training settings of the demo: the analysis model, trained briefly
DEMO_TRAINING = {"epochs": 20, "patience": 5, "batch_size": 128}
DEMO_SAMPLES = 64


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
    output: str | os.PathLike[str], *, events: int = 4000, seed: int = 1, progress: bool = True
) -> DemoReport:
    """Run every demo step into ``output`` and print the summary; returns the report."""
    from hepflow.analysis.neutrino import NeutrinoConfig, train
    from hepflow.analysis.neutrino_report import make_report
    from hepflow.processing import RunConfig, build_fileset, cutflow_to_dict, run_processor
    from processors.neutrino import NeutrinoFeatureProcessor
    from processors.neutrino_inference import NeutrinoInferenceProcessor

    try:
        from hepflow.generate.ttbar import generate_ttbar
    except ImportError as err:  # pythia8mc / fastjet missing
        raise HepflowError(
            f"the demo needs the [generate] extra: pip install 'hepflow[generate]' ({err})"
        ) from err

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)
    run = RunConfig(chunksize=max(events, 1), formats=("parquet", "root"), progress=progress)

    def step(name: str, where: str, t0: float) -> None:
        report.add(name, time.perf_counter() - t0, where)

    samples = {
        "train": (out / "ttbar_train.root", events, seed),
        "test": (out / "ttbar_test.root", events // 2, seed + 1),
    }
    t0 = time.perf_counter()
    for path, n, s in samples.values():
        if not path.exists():
            generate_ttbar(path, events=n, seed=s, progress=progress)
    step(
        "generate ttbar",
        f"{samples['train'][0].name} ({events}), {samples['test'][0].name} ({events // 2})",
        t0,
    )

    t0 = time.perf_counter()
    selected = {}
    for name, (path, _, _) in samples.items():
        result = run_processor(
            NeutrinoFeatureProcessor(), build_fileset([path]), out / f"features_{name}", run
        )
        flow = cutflow_to_dict(result["cutflow"])
        selected[name] = f"{flow['b jets']}/{flow['all']}"
    step(
        "process neutrino",
        f"features_train ({selected['train']} selected), features_test ({selected['test']})",
        t0,
    )

    t0 = time.perf_counter()
    cfg = NeutrinoConfig.from_file()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **DEMO_TRAINING))
    summary = train(out / "features_train", out / "models", config=cfg, progress=progress)
    step("train neutrino", f"models ({summary['events_used']} events, flow + regression)", t0)

    t0 = time.perf_counter()
    inputs = {"inference_test": samples["test"][0]}
    cms = _cms_sample()
    if cms is not None:
        inputs["inference_cms_nanoaodv12"] = cms
    for name, path in inputs.items():
        proc = NeutrinoInferenceProcessor(out / "models", samples=DEMO_SAMPLES)
        run_processor(proc, build_fileset([path]), out / name, run)
    step("infer neutrino", ", ".join(inputs), t0)

    t0 = time.perf_counter()
    rep = make_report(out / "inference_test", out / "report")
    ratio = rep["pz_width_ratio_to_quadratic"]["flow_mode"]
    step(
        "report neutrino",
        f"report (pz width flow mode / quadratic = {ratio:.2f} on {rep['events']} events)",
        t0,
    )
    print(report.summary())
    return report


def _cms_sample() -> Path | None:
    """The real CMS NanoAODv12 ttbar sample from the source tree, when running from a checkout."""
    path = Path(__file__).resolve().parent.parent / "tests" / "samples" / "nano_tt_v12.root"
    return path if path.is_file() else None

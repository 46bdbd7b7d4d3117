"""Build the pretrained neutrino model shipped with hepflow (docs/training.md, "The pretrained model").

Generates the training files (``--jobs`` processes, seeds ``train_seed + k``) and the held-out
sample (``test_seed``), processes, trains, tests on the held-out sample, writes the model card and
installs the model into ``hepflow/neutrino/pretrained/model`` (or ``--target``). A rerun skips
every stage whose output exists with the same settings (``<work>/stages.json``)::

    python tools/build_pretrained.py --jobs 16                 # the config's 3e5 + 2e4 events
    python tools/build_pretrained.py --jobs 2 --files 20       # 2 cores, resumable per 15k-event file
    python tools/build_pretrained.py --train-events 4000 --test-events 1000 --target /tmp/pre
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hepflow.errors import HepflowError
from hepflow.neutrino.config import NeutrinoConfig
from hepflow.neutrino.pretrained import LOCATION
from hepflow.neutrino.pretrained.build import BuildPlan, build, default_jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("build/pretrained"), help="samples, features, models")
    p.add_argument("--config", type=Path, default=None, help="analysis config (default: the shipped one)")
    p.add_argument("--train-events", type=int, default=None, help="default: [generation] train_events")
    p.add_argument("--test-events", type=int, default=None, help="default: [generation] test_events")
    p.add_argument("--jobs", type=int, default=default_jobs(), help="generation processes (default: cores)")
    p.add_argument(
        "--files", type=int, default=None, help="training files (default: --jobs); reruns keep finished ones"
    )
    p.add_argument("--target", type=Path, default=LOCATION, help=f"install folder (default: {LOCATION})")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        plan = BuildPlan(
            work=args.work,
            config=NeutrinoConfig.from_file(args.config),
            train_events=args.train_events,
            test_events=args.test_events,
            jobs=args.jobs,
            files=args.files,
            target=args.target,
            progress=args.progress,
        )
        card = build(plan)
    except HepflowError as err:
        print(f"build_pretrained: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(card["metrics"]["verdicts"], indent=1))
    print(f"pretrained model and card in {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

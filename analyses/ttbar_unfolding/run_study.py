"""Run the ttbar unfolding study (cINN vs iterative Bayesian unfolding) and write its report.

Usage (from the repository root, after ``hepflow generate ttbar`` made the two samples)::

    python analyses/ttbar_unfolding/run_study.py \\
        --train data/ttbar_train.root --test data/ttbar_test.root --output runs/unfolding

This is ``hepflow unfold ttbar`` (default config: the shipped ``hepflow/unfolding/config.toml``,
``hepflow config show unfolding``); every option of that command works here (``--retrain``,
``--executor``, ``--no-progress``, ...).
Processed columns and trained models in the output directory are reused by a rerun (the models
only when trained with the same settings; ``--retrain`` forces training). The report (figures,
``report.json``, ``report.md``) goes to ``<output>/report``.
"""

from __future__ import annotations

import sys

from hepflow.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``hepflow unfold ttbar ARGV``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["unfold", "ttbar", *argv])


if __name__ == "__main__":
    raise SystemExit(main())

"""Event generation: semileptonic ttbar with Pythia 8 and a fast CMS-like detector, as NanoAOD.

Needs the ``generate`` extra (``pythia8mc`` and ``fastjet``). The command line entry point is
``hepflow generate ttbar``; the library one is :func:`generate_ttbar`.
"""

from __future__ import annotations

from hepflow.generate.ttbar import GenerationStats, generate_ttbar

__all__ = ["GenerationStats", "generate_ttbar"]

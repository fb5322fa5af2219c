"""The CLI's table and number layer lives in :mod:`vivit_hpo._output` (the coordinator's live
view and the benchmarks print through it too, below the CLI); re-exported here."""

from vivit_hpo._output import *  # noqa: F403
from vivit_hpo._output import __all__  # noqa: F401

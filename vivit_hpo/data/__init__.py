"""Session files: the data contract, loading, samples and batches, a simulated population, and
importing NWB recordings and Sensorium 2023 mice.

See ``../shared/data-contract.md`` for the file format and the sample definition.
"""

from __future__ import annotations

from vivit_hpo.data.clips import ClipGeometry
from vivit_hpo.data.contract import expand_paths, raise_problems, validate_file
from vivit_hpo.data.loader import FileReport, inspect_file, load_sessions
from vivit_hpo.data.nwb import NWBImport, import_nwb
from vivit_hpo.data.oracle import compute_oracle, oracle_bps
from vivit_hpo.data.sensorium import SensoriumImport, import_sensorium
from vivit_hpo.data.session import SessionSet
from vivit_hpo.data.session_file import Session, load_session, stimulus_stats
from vivit_hpo.data.simulate import SynthResult, simulate_session, synthesize
from vivit_hpo.data.split import SPLITS, assign_split, sample_mask
from vivit_hpo.data.types import Batch, SessionMeta

__all__ = [
    "SPLITS",
    "Batch",
    "ClipGeometry",
    "FileReport",
    "NWBImport",
    "SensoriumImport",
    "Session",
    "SessionMeta",
    "SessionSet",
    "SynthResult",
    "assign_split",
    "compute_oracle",
    "expand_paths",
    "import_nwb",
    "import_sensorium",
    "inspect_file",
    "load_session",
    "load_sessions",
    "oracle_bps",
    "raise_problems",
    "sample_mask",
    "simulate_session",
    "stimulus_stats",
    "synthesize",
    "validate_file",
]

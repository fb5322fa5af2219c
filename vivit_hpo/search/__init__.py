"""The study service: specs, search spaces, storage, the objective, workers and coordinator."""

from __future__ import annotations

from vivit_hpo.search.record import TrialRecord
from vivit_hpo.search.spec import StudySpec, load_spec, parse_spec
from vivit_hpo.search.storage import default_storage_url, mask_url, open_storage

__all__ = [
    "StudySpec",
    "TrialRecord",
    "default_storage_url",
    "load_spec",
    "mask_url",
    "open_storage",
    "parse_spec",
]

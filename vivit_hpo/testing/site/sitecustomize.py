"""Test-only: on ``PYTHONPATH`` (:func:`vivit_hpo.testing.faults.hang_env` puts this folder
there), Python imports this module at the start of every process; with
``VIVIT_HPO_TEST_HANG`` set, the process's training hangs after its first epoch
(:func:`~vivit_hpo.testing.faults.install_hang`). Nothing happens without the variable."""

from __future__ import annotations

import os

if os.environ.get("VIVIT_HPO_TEST_HANG"):
    from vivit_hpo.testing.faults import install_hang

    install_hang(os.environ["VIVIT_HPO_TEST_HANG"])

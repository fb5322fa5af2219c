"""Test-only: on ``PYTHONPATH`` (:mod:`vivit_hpo.testing.faults` puts this folder there),
Python imports this module at the start of every process; with ``VIVIT_HPO_TEST_HANG`` set,
the process's training hangs after its first epoch
(:func:`~vivit_hpo.testing.faults.install_hang`); with ``VIVIT_HPO_TEST_KILL_MID_EPOCH`` set,
the process is SIGKILLed mid-way through ending that epoch
(:func:`~vivit_hpo.testing.faults.install_kill_mid_epoch`); with ``VIVIT_HPO_TEST_PAUSE_OPEN``
set, the process pauses while it opens its study
(:func:`~vivit_hpo.testing.faults.install_pause_open`). Nothing happens without them."""

from __future__ import annotations

import os

if os.environ.get("VIVIT_HPO_TEST_HANG"):
    from vivit_hpo.testing.faults import install_hang

    install_hang(os.environ["VIVIT_HPO_TEST_HANG"])

if os.environ.get("VIVIT_HPO_TEST_KILL_MID_EPOCH"):
    from vivit_hpo.testing.faults import install_kill_mid_epoch

    install_kill_mid_epoch(int(os.environ["VIVIT_HPO_TEST_KILL_MID_EPOCH"]))

if os.environ.get("VIVIT_HPO_TEST_PAUSE_OPEN"):
    from vivit_hpo.testing.faults import install_pause_open

    install_pause_open(os.environ["VIVIT_HPO_TEST_PAUSE_OPEN"])

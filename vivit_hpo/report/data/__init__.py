"""The data of every study-level figure, computed by pure functions of a :class:`StudySnapshot`.

Each ``*_info`` function takes a snapshot (and plain values) and returns a frozen dataclass that
:mod:`vivit_hpo.report.figures` draws; nothing here touches the database, the disk or plotly
(optuna's ``visualization/_intermediate_values.py`` split: ``_get_*_info`` then ``_get_*_plot``).
One module per section of the report, every name re-exported here:

- :mod:`.summary`: counts, hours, the budget used, the best trial, the yardsticks' standings;
- :mod:`.history`: the optimisation history and the learning curves;
- :mod:`.parallel` and :mod:`.importance`: the parameters against the objective;
- :mod:`.cost`: the objective against each cost, with its Pareto front;
- :mod:`.sessions`: validation BPS per session;
- :mod:`.ablation`: each factor of a grid study;
- :mod:`.baseline`: the ViViT against the CNN baseline.
"""

from __future__ import annotations

from vivit_hpo.report.data.ablation import AblationInfo, AblationRow, ablation_info, is_seed_param
from vivit_hpo.report.data.baseline import BaselineGroup, BaselineInfo, baseline_info
from vivit_hpo.report.data.cost import COST_ATTRS, CostInfo, CostPanel, cost_info, pareto_front
from vivit_hpo.report.data.history import Curve, CurvesInfo, HistoryInfo, curves_info, history_info
from vivit_hpo.report.data.importance import (
    MIN_IMPORTANCE_TRIALS,
    RELIABLE_IMPORTANCE_TRIALS,
    ImportanceInfo,
    importance_info,
)
from vivit_hpo.report.data.parallel import ParallelDim, ParallelInfo, parallel_info
from vivit_hpo.report.data.sessions import SessionsInfo, sessions_info
from vivit_hpo.report.data.summary import (
    BudgetItem,
    SummaryInfo,
    standings_info,
    summary_info,
    trial_hours,
)

__all__ = [
    "COST_ATTRS",
    "MIN_IMPORTANCE_TRIALS",
    "RELIABLE_IMPORTANCE_TRIALS",
    "AblationInfo",
    "AblationRow",
    "BaselineGroup",
    "BaselineInfo",
    "BudgetItem",
    "CostInfo",
    "CostPanel",
    "Curve",
    "CurvesInfo",
    "HistoryInfo",
    "ImportanceInfo",
    "ParallelDim",
    "ParallelInfo",
    "SessionsInfo",
    "SummaryInfo",
    "ablation_info",
    "baseline_info",
    "cost_info",
    "curves_info",
    "history_info",
    "importance_info",
    "is_seed_param",
    "parallel_info",
    "pareto_front",
    "sessions_info",
    "standings_info",
    "summary_info",
    "trial_hours",
]

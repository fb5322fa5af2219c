"""Fixtures of the report tests (the study builders live in ``report_studies``)."""

from __future__ import annotations

from report_studies import pg_study, small_study, sqlite_url, tiny_run

__all__ = ["pg_study", "small_study", "sqlite_url", "tiny_run"]

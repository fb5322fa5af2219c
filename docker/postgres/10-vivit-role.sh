#!/bin/sh
# Mounted in /docker-entrypoint-initdb.d: runs once, when PostgreSQL initialises an empty data
# volume, as the superuser. Creates the non-superuser role of the workers and the dashboard
# (VIVIT_DB_USER, VIVIT_DB_PASSWORD) owning the study database (VIVIT_DB_NAME).
set -eu
psql --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
    -v role="${VIVIT_DB_USER:-vivit}" \
    -v password="${VIVIT_DB_PASSWORD:?set VIVIT_DB_PASSWORD}" \
    -v db="${VIVIT_DB_NAME:-vivit_hpo}" \
    -f /opt/vivit-hpo-init/vivit-role.sql

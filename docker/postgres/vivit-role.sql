-- The role that the workers and the dashboard connect as: it owns the study database (Optuna
-- creates its tables there) and is no superuser, so a leaked worker password cannot read other
-- databases, create roles or run programs on the server.
--
-- psql variables: role, password, db. Run by 10-vivit-role.sh when PostgreSQL initialises an
-- empty data volume (docker-compose.yml); by hand on a server of your own:
--   psql -U postgres -v role=vivit -v password=... -v db=vivit_hpo -f vivit-role.sql
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec

SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec

ALTER DATABASE :"db" OWNER TO :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;

\connect :"db"
-- PostgreSQL 15+ gives the database owner the public schema; older versions give it to all.
ALTER SCHEMA public OWNER TO :"role";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

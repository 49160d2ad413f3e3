"""Fixtures for the production setup: a throwaway PostgreSQL cluster (see ``pg_support``)."""

from tests.pg_support import pg_cluster, pg_db, pg_empty_url, pg_url  # noqa: F401

-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d), as
-- POSTGRES_USER: one database per service, owned by that user. The services create their own
-- tables at start-up (Alembic, version table alembic_version_<service>).
CREATE DATABASE scheduler;
CREATE DATABASE inventory;
CREATE DATABASE notify;

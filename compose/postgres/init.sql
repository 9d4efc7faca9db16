-- Run once by the postgres image's bootstrap superuser (POSTGRES_USER), on an empty data
-- folder, in POSTGRES_DB (firstcome). The roles are the local stack's (stack/bin/stack,
-- postgres_setup; stack/postgres/member-db.sh): none of them is a superuser. Passwords as
-- on the local stack, for this demo only (environment = production refuses them).

-- The owner of firstcome's database: the only role that runs DDL (`firstcome db migrate`,
-- which also applies migrations/grants.sql) and the operator's commands.
CREATE ROLE firstcome LOGIN PASSWORD 'firstcome' NOSUPERUSER CREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER DATABASE firstcome OWNER TO firstcome;

-- One login role per service, granted only what it needs by migrations/grants.sql when
-- `firstcome db migrate` runs.
CREATE ROLE firstcome_ingest LOGIN PASSWORD 'firstcome_ingest' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE firstcome_stock LOGIN PASSWORD 'firstcome_stock' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE firstcome_recorder LOGIN PASSWORD 'firstcome_recorder' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE firstcome_sender LOGIN PASSWORD 'firstcome_sender' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- The registry keeps its schemas in its own database, owned by its own role.
CREATE ROLE firstcome_registry LOGIN PASSWORD 'firstcome_registry' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE DATABASE registry OWNER firstcome_registry;
REVOKE ALL ON DATABASE registry FROM PUBLIC;

-- The shop's member database (on the stack: its own primary and standbys), written by its
-- owner (`firstcome members seed`), read by the services as firstcome_reader, which may
-- connect to it and nowhere else (grants.sql revokes CONNECT on firstcome's database from
-- PUBLIC; the registry's is revoked above).
CREATE ROLE firstcome_reader LOGIN PASSWORD 'firstcome_reader' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS IN ROLE pg_read_all_data;
CREATE DATABASE shop OWNER firstcome;
REVOKE ALL ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO firstcome, firstcome_reader;
\connect shop
SET ROLE firstcome;
\i /etc/firstcome/shop.sql

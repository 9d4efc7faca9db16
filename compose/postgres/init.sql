-- The registry's own database beside firstcome's (the image creates POSTGRES_DB = firstcome).
CREATE DATABASE registry OWNER firstcome;
-- One login role per service (granted by migrations/grants.sql when `firstcome db migrate`
-- runs; passwords as on the local stack, for this demo only).
CREATE ROLE firstcome_ingest LOGIN PASSWORD 'firstcome_ingest';
CREATE ROLE firstcome_stock LOGIN PASSWORD 'firstcome_stock';
CREATE ROLE firstcome_recorder LOGIN PASSWORD 'firstcome_recorder';
CREATE ROLE firstcome_sender LOGIN PASSWORD 'firstcome_sender';

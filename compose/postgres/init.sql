-- The registry's own database beside firstcome's (the image creates POSTGRES_DB = firstcome).
CREATE DATABASE registry OWNER firstcome;

-- The site's database and its role, for PostgreSQL on node db. Rendered by bulkhead.
-- Run after every start of the server, as the postgres superuser over the
-- local socket:
--   psql -X -q -v ON_ERROR_STOP=1 -h /run/bulkhead -p 5432 -U postgres -d postgres -f THIS
-- Every statement is idempotent. Which addresses may log in is pg_hba.conf's
-- business. This file holds the site role's password.
SELECT E'CREATE ROLE "shopper"' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = E'shopper')\gexec
ALTER ROLE "shopper" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD E'golden-db-password';
SELECT E'CREATE DATABASE "shop" OWNER "shopper" ENCODING \'UTF8\' LOCALE \'C.UTF-8\' TEMPLATE template0' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = E'shop')\gexec
ALTER DATABASE "shop" OWNER TO "shopper";
REVOKE ALL ON DATABASE "shop" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE "shop" TO "shopper";

-- The monitor's exporter: it logs in as the system user of its name on the
-- local socket (pg_hba.conf's peer line), to the postgres database alone, and
-- reads the statistics views every role may read; it holds no other right.
SELECT E'CREATE ROLE "prometheus"' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = E'prometheus')\gexec
ALTER ROLE "prometheus" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 PASSWORD NULL;

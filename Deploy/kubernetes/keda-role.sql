-- The read-only role KEDA's PostgreSQL scaler connects as (Secret dubfarm-keda). Run once as a
-- role that may create roles, in the farm's database, after `dubfarm migrate`:
--   psql "$ADMIN_URL" -v password="'...'" -f Deploy/kubernetes/keda-role.sql
-- It can read the three tables the scaler's query reads, and nothing else; it can write nothing.
CREATE ROLE dubfarm_keda LOGIN PASSWORD :password;
GRANT CONNECT ON DATABASE :"DBNAME" TO dubfarm_keda;
GRANT USAGE ON SCHEMA public TO dubfarm_keda;
GRANT SELECT ON jobs, segments, personalisations TO dubfarm_keda;
ALTER ROLE dubfarm_keda SET default_transaction_read_only = on;

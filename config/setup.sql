-- The least-privileged role for replwarden. Run once as a superuser:
--   psql -U postgres -d postgres -f config/setup.sql
--
-- pg_monitor          lets it read every column of pg_stat_replication and
--                     pg_replication_slots (without it they read as NULL and
--                     replwarden acts on nothing).
-- pg_signal_backend   lets it cancel/terminate walsenders of non-superuser
--                     roles. It can never signal a walsender whose role is a
--                     superuser: replicate as a role WITH REPLICATION instead
--                     of as postgres.
-- pg_use_reserved_connections (PostgreSQL 16+) lets it connect when every
--                     ordinary connection slot is taken (walsenders do not
--                     use those slots: without it, any role that can log in
--                     can lock replwarden out while rogue streams go on).
--                     Keep reserved_connections >= 1 in postgresql.conf.
--                     On 13-15 there is no such role: see the README,
--                     "Connection slots".
-- REPLICATION (not granted here) is needed only to drop replication slots
--                     ([[slot_rule]] with action = "drop"): if you use such
--                     rules, run ALTER ROLE replwarden REPLICATION;
CREATE ROLE replwarden LOGIN;
GRANT pg_monitor, pg_signal_backend TO replwarden;
DO $$
BEGIN
  IF current_setting('server_version_num')::int >= 160000 THEN
    EXECUTE 'GRANT pg_use_reserved_connections TO replwarden';
  END IF;
END
$$;
-- Connect over the local socket with peer authentication, as the replwarden
-- system user the service runs as. In pg_hba.conf, before broader lines:
--   local   postgres   replwarden   peer

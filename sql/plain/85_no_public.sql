-- =============================================================================
-- pg_webhook, SQL flavor: nothing granted to PUBLIC. Run after the install
-- sources (before 90_roles.sql, which grants to pg_webhook's roles only)
-- and at the end of every upgrade step (scripts/sql-flavor-step.sh), for
-- what each made.
-- =============================================================================

-- Every function made starts with no grant to PUBLIC (17_grants.sql
-- finds the extension's functions through the extension, which a script
-- has not).
revoke all on all functions in schema webhook from public;
do $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure from pg_catalog.pg_proc p
        where p.pronamespace = 'public'::regnamespace and p.proname like 'webhook\_%'
          and p.proowner = (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'webhook')
    loop
        execute format('revoke all on function %s from public', v_fn);
    end loop;
end
$$;

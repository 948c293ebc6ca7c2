-- =============================================================================
-- pg_webhook, SQL flavor: what the install needs from roles without being a
-- superuser, and the rights the extension's script gives through its
-- membership list (sql/install/17_grants.sql runs first).
--
-- The installing role (a managed service's administrator: CREATEROLE,
-- CREATE on the database) made the group roles, or was given them with
-- ADMIN OPTION. It must be able to SET ROLE to webhook_filter and
-- webhook_capture, whose functions it makes (PostgreSQL 16 and later grant
-- a role's creator ADMIN but not SET; 15 only knows membership), and have
-- their rights (INHERIT): it sets the rights on their functions as their
-- owner (a REVOKE or GRANT by a role without them does nothing), the
-- backfill's step calls webhook_filter's entry to a reader, and a restore
-- comments on them and grants as their owner. Those roles have no right
-- but their functions', so this lends the installer nothing that SET ROLE
-- would not, and they get none of its. They own functions in the schema
-- webhook, which takes CREATE on it: webhook._give_function grants it for
-- each ALTER only.
-- =============================================================================

-- API: Public
do $$
declare
    v_role text;
begin
    begin
        create role webhook_capture nologin;
    exception when duplicate_object or unique_violation then null;
    end;
    if not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
        foreach v_role in array array['webhook_filter', 'webhook_capture'] loop
            begin
                if current_setting('server_version_num')::integer >= 160000 then
                    execute format('grant %I to %I with inherit true, set true', v_role, current_user);
                else
                    execute format('grant %I to %I', v_role, current_user);
                end if;
            exception when insufficient_privilege then
                raise exception 'pg_webhook: % cannot take the role % (made before, by another role)', current_user, v_role
                    using errcode = '42501',
                          hint = format('Have its maker run: grant %I to %I with admin option', v_role, current_user);
            end;
        end loop;
    end if;
end
$$;

grant usage on schema webhook to webhook_capture;
select webhook._give_function('webhook._capture()', 'webhook_capture');
grant execute on function webhook._store_captured(oid, text, text, text, text, text, text, text[]) to webhook_capture;

grant select on webhook.settings to webhook_reader;
-- webhook_sign and webhook_verify run as their caller, and call these.
grant execute on function webhook._secret_key(text), webhook._hmac_sha256(bytea, bytea),
    webhook._signed_content(text, bigint, text)
    to webhook_admin, webhook_publisher, webhook_reader, webhook_worker;

-- API: Private
-- The version of pg_webhook installed by this script (the extension's is
-- in pg_extension): the worker checks it at start.
create function webhook._sql_flavor_version() returns text
language sql immutable parallel safe
return '@VERSION@';
revoke all on function webhook._sql_flavor_version() from public;
grant execute on function webhook._sql_flavor_version() to webhook_worker, webhook_reader;

-- As a pg_tle extension, the settings are dumped with the database.
do $$
begin
    if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        perform pg_catalog.pg_extension_config_dump('webhook.settings', '');
    end if;
end
$$;

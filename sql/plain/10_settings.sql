-- =============================================================================
-- pg_webhook, SQL flavor: the settings (the extension's pg_webhook.* GUCs).
--
-- The extension registers its settings from its library, as superuser-only
-- GUCs. Without the library they would be placeholders, which any session
-- may SET and which only a superuser may give a default with ALTER
-- DATABASE/ROLE … SET: on a managed service no one could configure them,
-- and anyone could loosen a limit for their own session. So they live in
-- this table, which only its owner (the role that installed pg_webhook)
-- may change; readers see what is in force. All but capture_enabled, a
-- session's own switch (see webhook._capture). Names and units are the GUCs'
-- own; the ranges are theirs too (CHECK, so a bad value is refused at once).
-- Read only through the accessors below.
-- =============================================================================

-- API: Public
create table webhook.settings (
    name text primary key,
    value text not null,
    constraint settings_known check (name in ('allow_private_targets', 'notify_min_interval', 'retention',
                                               'disable_after', 'failing_after', 'max_payload_bytes')),
    constraint settings_boolean check (name <> 'allow_private_targets' or value in ('on', 'off')),
    constraint settings_integer check (name = 'allow_private_targets' or value ~ '^[0-9]{1,10}$'),
    constraint settings_range check (
        case name
            when 'notify_min_interval' then value::bigint between 0 and 10000
            when 'retention' then value::bigint between 60 and 2147483647
            when 'disable_after' then value::bigint between 1 and 2147483647
            when 'failing_after' then value::bigint between 1 and 2147483647
            when 'max_payload_bytes' then value::bigint between 1024 and 67108864
            else true
        end)
);
comment on table webhook.settings is
    'SQL flavor only: pg_webhook''s settings (the extension''s pg_webhook.* GUCs but capture_enabled, same names without the prefix; notify_min_interval in ms, retention and disable_after in seconds, max_payload_bytes in bytes, the rest on/off or a count). Changed by the role that installed pg_webhook: update webhook.settings set value = ''7'' where name = ''failing_after''.';

-- API: Private
-- A setting's default, the extension's GUC's (extension/src/gucs.rs): the
-- one place the SQL flavor names them. SQL-standard and immutable, so that
-- a call with a constant name is folded into the caller's plan.
create function webhook._setting_default(p_name text) returns text
language sql immutable parallel safe
return case p_name when 'allow_private_targets' then 'off' when 'notify_min_interval' then '50'
                   when 'retention' then '2592000' when 'disable_after' then '432000'
                   when 'failing_after' then '5' when 'max_payload_bytes' then '1048576' end;

insert into webhook.settings (name, value)
select n, webhook._setting_default(n)
from unnest(array['allow_private_targets', 'notify_min_interval', 'retention', 'disable_after', 'failing_after',
                  'max_payload_bytes']) n;

-- API: Private
-- One setting's value (its default when its row was deleted).
-- PL/pgSQL, not SQL: called per event, and a SQL function called from
-- PL/pgSQL is planned again in every transaction (PL/pgSQL keeps its own
-- statements' plans).
create function webhook._setting(p_name text) returns text
language plpgsql stable parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return coalesce((select s.value from webhook.settings s where s.name = p_name), webhook._setting_default(p_name));
end
$$;

-- API: Private
-- notify_min_interval, in ms (the worker reads it at start: SECURITY
-- DEFINER, as webhook_worker may not read the table).
create function webhook._notify_min_interval_ms() returns integer
language sql stable strict security definer
set search_path = pg_catalog, webhook, pg_temp
return webhook._setting('notify_min_interval')::integer;

-- API: Private
-- retention, in seconds.
create function webhook._retention_s() returns integer
language sql stable strict
set search_path = pg_catalog, webhook, pg_temp
return webhook._setting('retention')::integer;

-- API: Private
-- disable_after, in seconds.
create function webhook._disable_after_s() returns integer
language sql stable strict
set search_path = pg_catalog, webhook, pg_temp
return webhook._setting('disable_after')::integer;

-- API: Private
-- failing_after, failed attempts in a row.
create function webhook._failing_after() returns integer
language sql stable strict
set search_path = pg_catalog, webhook, pg_temp
return webhook._setting('failing_after')::integer;

-- API: Private
-- Refuses a published event's data over max_payload_bytes (54000), as the
-- extension does; true otherwise.
create function webhook._check_payload_size(bytes bigint) returns boolean
language plpgsql stable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_max integer := webhook._setting('max_payload_bytes')::integer;
begin
    if bytes > v_max then
        raise exception 'webhook payload is % bytes, over the limit of % bytes', bytes, v_max
            using errcode = '54000',
                  hint = 'Send a smaller payload (for example an id to fetch), or have the role that installed pg_webhook raise max_payload_bytes in webhook.settings.';
    end if;
    return true;
end
$$;

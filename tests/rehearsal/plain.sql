-- The rehearsed next release (tests/rehearsal/build.sh), appended to
-- sql/plain/40_capture.sql: the SQL counterparts of the extension step's
-- new C function and of the one it replaces (its last definition wins),
-- and a change of the SQL flavor's own (also in plain-step.sql).
create function webhook._rehearsal_base() returns integer
language sql immutable parallel safe
return 41;

-- The payload's limit, refused with the same error, its hint changed.
create or replace function webhook._check_payload_size(bytes bigint) returns boolean
language plpgsql stable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_max integer := webhook._setting('max_payload_bytes')::integer;
begin
    if bytes > v_max then
        raise exception 'webhook payload is % bytes, over the limit of % bytes', bytes, v_max
            using errcode = '54000', hint = 'Send a smaller payload.';
    end if;
    return true;
end
$$;

comment on table webhook.settings is 'rehearsed';

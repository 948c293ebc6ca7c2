-- =============================================================================
-- pg_webhook: validation helpers of the public API (private, `_` prefix).
--
-- Each raises a specific SQLSTATE with a hint, and returns its input
-- normalised, so that the API functions read as a list of checks.
-- =============================================================================

-- API: Private
create function webhook._check_event_type(
    p_event_type text -- e.g. 'order.created'
) returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_event_type is null
       or length(p_event_type) > 255
       or p_event_type !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' then
        raise exception 'invalid event type: %', coalesce(quote_literal(p_event_type), 'NULL')
            using errcode = '22023',
                  hint = 'An event type is dot-separated words of letters, digits, "_" or "-", such as ''order.created'' (at most 255 characters).';
    end if;
    return p_event_type;
end
$$;

-- API: Private
create function webhook._check_patterns(
    p_patterns text[] -- e.g. '{order.*,invoice.paid}'
) returns text[]
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_pattern text;
begin
    if p_patterns is null or cardinality(p_patterns) = 0 then
        raise exception 'event_types must list at least one pattern'
            using errcode = '22023', hint = 'Use ''{*}'' for every event.';
    end if;
    foreach v_pattern in array p_patterns loop
        if v_pattern is null
           or length(v_pattern) > 255
           or v_pattern !~ '^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$' then
            raise exception 'invalid event type pattern: %', coalesce(quote_literal(v_pattern), 'NULL')
                using errcode = '22023',
                      hint = 'A pattern is ''*'', an exact type such as ''order.created'', or a prefix ending in ''.*'' such as ''order.*''.';
        end if;
    end loop;
    return array(select distinct unnest(p_patterns) order by 1);
end
$$;

-- API: Private
create function webhook._check_headers(
    p_headers jsonb -- {"name": "value", ...}
) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key text;
    v_value jsonb;
    v_out jsonb := '{}';
begin
    if p_headers is null then
        return '{}';
    end if;
    if jsonb_typeof(p_headers) <> 'object' then
        raise exception 'headers must be a JSON object of strings'
            using errcode = '22023', hint = 'For example {"authorization": "Bearer …"}.';
    end if;
    -- Bounded, so that no endpoint can make every request of the worker
    -- huge (receivers commonly refuse more than 8 KiB of headers).
    if (select count(*) from jsonb_object_keys(p_headers)) > 32 then
        raise exception 'at most 32 extra headers' using errcode = '22023';
    end if;
    if octet_length(p_headers::text) > 8192 then
        raise exception 'extra headers take at most 8192 bytes' using errcode = '22023';
    end if;
    for v_key, v_value in select key, value from jsonb_each(p_headers) loop
        if v_key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' then
            raise exception 'invalid header name: %', quote_literal(v_key) using errcode = '22023';
        end if;
        if lower(v_key) in ('content-type', 'content-length', 'host', 'transfer-encoding', 'connection')
           or lower(v_key) like 'webhook-%' then
            raise exception 'header % is set by pg_webhook and cannot be overridden', quote_literal(v_key)
                using errcode = '22023';
        end if;
        if jsonb_typeof(v_value) <> 'string' or (v_value #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' then
            raise exception 'header % must have a string value without control characters', quote_literal(v_key)
                using errcode = '22023';
        end if;
        v_out := v_out || jsonb_build_object(lower(v_key), v_value);
    end loop;
    return v_out;
end
$$;

-- API: Private
create function webhook._check_retry_policy(
    p_policy jsonb -- null, or {"max_attempts", "initial_delay", "max_delay", "backoff_multiplier"}
) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key text;
    v_initial interval;
    v_max interval;
    c_hint constant text := 'For example {"max_attempts": 8, "initial_delay": "5 seconds", "max_delay": "1 hour", "backoff_multiplier": 2}.';
begin
    if p_policy is null or p_policy = 'null'::jsonb then
        return null;
    end if;
    if jsonb_typeof(p_policy) <> 'object' then
        raise exception 'retry_policy must be a JSON object' using errcode = '22023', hint = c_hint;
    end if;
    for v_key in select jsonb_object_keys(p_policy) loop
        if v_key not in ('max_attempts', 'initial_delay', 'max_delay', 'backoff_multiplier') then
            raise exception 'unknown retry_policy key: %', quote_literal(v_key) using errcode = '22023', hint = c_hint;
        end if;
    end loop;
    if p_policy ? 'max_attempts' and (
           jsonb_typeof(p_policy -> 'max_attempts') <> 'number'
           or (p_policy ->> 'max_attempts')::numeric <> trunc((p_policy ->> 'max_attempts')::numeric)
           or (p_policy ->> 'max_attempts')::numeric not between 1 and 100) then
        raise exception 'retry_policy.max_attempts must be an integer from 1 to 100' using errcode = '22023', hint = c_hint;
    end if;
    if p_policy ? 'backoff_multiplier' and (
           jsonb_typeof(p_policy -> 'backoff_multiplier') <> 'number'
           or (p_policy ->> 'backoff_multiplier')::numeric not between 1 and 100) then
        raise exception 'retry_policy.backoff_multiplier must be a number from 1 to 100' using errcode = '22023', hint = c_hint;
    end if;
    v_initial := webhook._policy_interval(p_policy, 'initial_delay', c_hint);
    v_max := webhook._policy_interval(p_policy, 'max_delay', c_hint);
    if v_initial is not null and v_max is not null and v_max < v_initial then
        raise exception 'retry_policy.max_delay (%) is shorter than initial_delay (%)', v_max, v_initial
            using errcode = '22023', hint = c_hint;
    end if;
    return p_policy;
end
$$;

-- API: Private
create function webhook._policy_interval(
    p_policy jsonb, -- the retry policy
    p_key text,     -- 'initial_delay' or 'max_delay'
    p_hint text     -- hint for the error
) returns interval
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v interval;
begin
    if not p_policy ? p_key then
        return null;
    end if;
    if jsonb_typeof(p_policy -> p_key) <> 'string' then
        raise exception 'retry_policy.% must be an interval string such as ''5 seconds''', p_key
            using errcode = '22023', hint = p_hint;
    end if;
    begin
        v := (p_policy ->> p_key)::interval;
    exception when others then
        raise exception 'retry_policy.% is not a valid interval: %', p_key, quote_literal(p_policy ->> p_key)
            using errcode = '22023', hint = p_hint;
    end;
    if v <= interval '0' or v > interval '7 days' then
        raise exception 'retry_policy.% must be between 1 microsecond and 7 days, not %', p_key, v
            using errcode = '22023', hint = p_hint;
    end if;
    return v;
end
$$;

-- API: Private
create function webhook._check_timeout(
    p_timeout interval -- per-request timeout
) returns interval
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_timeout is null or p_timeout < interval '1 millisecond' or p_timeout > interval '5 minutes' then
        raise exception 'timeout must be between 1 millisecond and 5 minutes, not %', coalesce(p_timeout::text, 'NULL')
            using errcode = '22023';
    end if;
    return p_timeout;
end
$$;

-- API: Private
create function webhook._live_endpoint(
    p_endpoint_id bigint -- the endpoint to find
) returns webhook.endpoints
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v webhook.endpoints;
begin
    if p_endpoint_id is null then
        raise exception 'endpoint_id must not be null' using errcode = '22004';
    end if;
    select * into v from webhook.endpoints where id = p_endpoint_id and deleted_at is null;
    if not found then
        raise exception 'endpoint % does not exist', coalesce(p_endpoint_id::text, 'NULL')
            using errcode = '42704', hint = 'List endpoints with: select id, name, url from webhook.endpoints where deleted_at is null;';
    end if;
    return v;
end
$$;

-- API: Private
create function webhook._check_name(
    p_name text -- an endpoint name
) returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_name is not null and (length(p_name) = 0 or length(p_name) > 200) then
        raise exception 'endpoint name must be 1 to 200 characters' using errcode = '22023';
    end if;
    return p_name;
end
$$;

-- API: Private
create function webhook._check_max_in_flight(
    p_max integer -- deliveries of one endpoint in flight per worker
) returns integer
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_max is not null and p_max not between 1 and 10000 then
        raise exception 'max_in_flight must be between 1 and 10000, not %', p_max
            using errcode = '22023', hint = 'Pass null for the worker''s default share.';
    end if;
    return p_max;
end
$$;

-- API: Private
-- A rate limit: max_per_second from 1 to 100,000, burst from 1 to
-- 1,000,000 and only with a rate.
create function webhook._check_rate(
    p_max_per_second integer, -- requests per second, or null for no limit
    p_burst integer           -- the bucket's size, or null for one second's worth
) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_max_per_second is not null and p_max_per_second not between 1 and 100000 then
        raise exception 'max_per_second must be between 1 and 100000, not %', p_max_per_second
            using errcode = '22023', hint = 'Pass null for no limit.';
    end if;
    if p_burst is not null and p_burst not between 1 and 1000000 then
        raise exception 'burst must be between 1 and 1000000, not %', p_burst
            using errcode = '22023', hint = 'Pass null for one second''s worth (max_per_second).';
    end if;
    if p_burst is not null and p_max_per_second is null then
        raise exception 'burst needs max_per_second' using errcode = '22023';
    end if;
end
$$;

-- API: Private
-- What an ordered endpoint does with the key of a delivery that gives up:
-- 'block' (the default) or 'skip'.
create function webhook._check_on_exhausted(
    p_on_exhausted text -- the setting asked for
) returns text
language plpgsql immutable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if p_on_exhausted is null or p_on_exhausted not in ('block', 'skip') then
        raise exception 'on_exhausted must be ''block'' or ''skip'', not %', coalesce(quote_literal(p_on_exhausted), 'NULL')
            using errcode = '22023',
                  hint = 'block: the key waits for webhook_unblock(); skip: the next event of the key goes.';
    end if;
    return p_on_exhausted;
end
$$;

-- API: Private
-- {"type": "basic", "username", "password"} | {"type": "bearer", "token"} |
-- {"type": "api_key", "key", "header" (default "x-api-key")}. Returned with
-- only the keys that matter, every value a string without control characters.
create function webhook._check_auth(
    p_auth jsonb -- null for none
) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    c_hint constant text := 'For example {"type": "bearer", "token": "…"}, {"type": "basic", "username": "…", "password": "…"} or {"type": "api_key", "key": "…", "header": "x-api-key"}.';
    v_type text;
    v_keys text[];
    v_key text;
    v_out jsonb;
begin
    if p_auth is null or p_auth = 'null'::jsonb then
        return null;
    end if;
    if jsonb_typeof(p_auth) <> 'object' then
        raise exception 'auth must be a JSON object' using errcode = '22023', hint = c_hint;
    end if;
    -- Bounded as headers are (it becomes one): no endpoint can make every
    -- request of the worker huge.
    if octet_length(p_auth::text) > 8192 then
        raise exception 'auth takes at most 8192 bytes' using errcode = '22023', hint = c_hint;
    end if;
    v_type := p_auth ->> 'type';
    v_keys := case v_type
        when 'basic' then array['username', 'password']
        when 'bearer' then array['token']
        when 'api_key' then array['key']
    end;
    if v_keys is null then
        raise exception 'auth.type must be basic, bearer or api_key, not %', coalesce(quote_literal(v_type), 'NULL')
            using errcode = '22023', hint = c_hint;
    end if;
    v_out := jsonb_build_object('type', v_type);
    if v_type = 'api_key' then
        v_out := v_out || jsonb_build_object('header', lower(coalesce(p_auth ->> 'header', 'x-api-key')));
        perform webhook._check_headers(jsonb_build_object(v_out ->> 'header', 'x'));
    end if;
    foreach v_key in array v_keys loop
        if jsonb_typeof(p_auth -> v_key) is distinct from 'string' or length(p_auth ->> v_key) = 0
           or (p_auth ->> v_key) ~ '[\r\n\x01-\x1f\x7f]' then
            raise exception 'auth.% must be a non-empty string without control characters', v_key
                using errcode = '22023', hint = c_hint;
        end if;
        v_out := v_out || jsonb_build_object(v_key, p_auth -> v_key);
    end loop;
    if v_type = 'basic' and strpos(p_auth ->> 'username', ':') > 0 then
        raise exception 'auth.username must not contain ":"' using errcode = '22023', hint = c_hint;
    end if;
    return v_out;
end
$$;

-- API: Private
-- The request header an auth object stands for, as {"name": "value"}.
create function webhook._auth_header(
    p_auth jsonb -- as returned by webhook._check_auth
) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select case p_auth ->> 'type'
        when 'bearer' then jsonb_build_object('authorization', 'Bearer ' || (p_auth ->> 'token'))
        when 'basic' then jsonb_build_object('authorization', 'Basic ' || translate(encode(convert_to(
            (p_auth ->> 'username') || ':' || (p_auth ->> 'password'), 'UTF8'), 'base64'), E'\n', ''))
        when 'api_key' then jsonb_build_object(p_auth ->> 'header', p_auth ->> 'key')
        else '{}'::jsonb
    end
$$;

-- API: Private
-- Every write of an endpoint's retry policy is checked, not only those of
-- webhook_subscribe and webhook_update: the claim reads the policy of every
-- endpoint with work, and a row edited by hand with a bad value would make
-- every claim fail.
create function webhook._endpoints_check()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform webhook._check_retry_policy(new.retry_policy);
    return new;
end
$$;
create trigger endpoints_check
    before insert or update of retry_policy on webhook.endpoints
    for each row execute function webhook._endpoints_check();

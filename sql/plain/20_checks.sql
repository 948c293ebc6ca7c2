-- =============================================================================
-- pg_webhook, SQL flavor: what the extension's library checks and computes
-- for the SQL API (extension/src/api.rs and the protocol crate), in SQL and
-- PL/pgSQL with core PostgreSQL only (no pgcrypto: one dependency fewer to
-- enable, and no schema of another extension to resolve).
--
-- Same names, signatures, results and SQLSTATEs as the library's, except
-- for URLs: the library parses them as browsers do (WHATWG); here a stricter
-- subset is accepted (see webhook._check_url), so a URL accepted here is
-- accepted, and written the same, by the extension and the worker.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- signing (Standard Webhooks: v1,<base64(HMAC-SHA256)>, protocol/src/signing.rs)
-- -----------------------------------------------------------------------------

-- API: Private
-- The key of a whsec_ secret (the prefix is optional, surrounding blanks
-- ignored), checked as the library checks it: canonical standard base64 of
-- 24 to 64 bytes, else 22023. decode() alone would accept embedded blanks
-- and non-canonical trailing bits, which the library refuses.
create function webhook._secret_key(p_secret text) returns bytea
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_b64 text := btrim(case when starts_with(p_secret, 'whsec_') then substr(p_secret, 7) else p_secret end,
                        E' \t\n\r\f\v');
    v_key bytea;
begin
    if v_b64 !~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$' then
        raise exception 'invalid signing secret: the signing secret is not valid base64 after the "whsec_" prefix'
            using errcode = '22023',
                  hint = 'Pass null to have a secret generated, or a whsec_ secret from another Standard Webhooks provider.';
    end if;
    v_key := decode(v_b64, 'base64');
    -- encode() breaks lines every 76 characters.
    if translate(encode(v_key, 'base64'), E'\n', '') <> v_b64 then
        raise exception 'invalid signing secret: the signing secret is not valid base64 after the "whsec_" prefix'
            using errcode = '22023',
                  hint = 'Pass null to have a secret generated, or a whsec_ secret from another Standard Webhooks provider.';
    end if;
    if length(v_key) not between 24 and 64 then
        raise exception 'invalid signing secret: the signing secret decodes to % bytes; between 24 and 64 are required',
            length(v_key)
            using errcode = '22023',
                  hint = 'Pass null to have a secret generated, or a whsec_ secret from another Standard Webhooks provider.';
    end if;
    return v_key;
end
$$;

-- API: Private
-- HMAC-SHA256 (RFC 2104) on core sha256(); keys are at most 64 bytes (one
-- SHA-256 block), so they are only padded, never hashed first.
create function webhook._hmac_sha256(p_key bytea, p_message bytea) returns bytea
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_key bytea := p_key || decode(repeat('00', 64 - length(p_key)), 'hex');
    v_inner bytea := v_key;
    v_outer bytea := v_key;
begin
    for i in 0..63 loop
        v_inner := set_byte(v_inner, i, get_byte(v_key, i) # 54);  -- 0x36
        v_outer := set_byte(v_outer, i, get_byte(v_key, i) # 92);  -- 0x5c
    end loop;
    return sha256(v_outer || sha256(v_inner || p_message));
end
$$;

-- API: Private
-- The signed content: "{msg_id}.{ts}.{body}" in UTF-8, whatever the
-- database's encoding (the worker signs UTF-8).
create function webhook._signed_content(p_msg_id text, p_ts bigint, p_body text) returns bytea
language sql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
return convert_to(p_msg_id || '.' || p_ts::text || '.' || p_body, 'UTF8');

-- API: Public
create function webhook_sign(secret text, msg_id text, ts bigint, body text) returns text
language sql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
return 'v1,' || encode(webhook._hmac_sha256(webhook._secret_key(secret),
                                            webhook._signed_content(msg_id, ts, body)), 'base64');

-- API: Public
-- Any of the space-separated v1 signatures matches (unknown versions are
-- skipped, as the spec asks); the timestamp is the receiver's business.
-- The comparison is of two HMACs under a fresh random key, so its time says
-- nothing about how much of the signature was right.
create function webhook_verify(secret text, msg_id text, ts bigint, body text, signature text) returns boolean
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_expected bytea := webhook._hmac_sha256(webhook._secret_key(secret), webhook._signed_content(msg_id, ts, body));
    v_blind bytea := uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());
    v_part text;
begin
    foreach v_part in array regexp_split_to_array(signature, E'[ \t\n\f\r]+') loop
        if starts_with(v_part, 'v1,')
           and substr(v_part, 4) ~ '^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$'
           and webhook._hmac_sha256(v_blind, decode(substr(v_part, 4), 'base64'))
               = webhook._hmac_sha256(v_blind, v_expected) then
            return true;
        end if;
    end loop;
    return false;
end
$$;

-- -----------------------------------------------------------------------------
-- secrets
-- -----------------------------------------------------------------------------

-- API: Private
-- A caller's secret, checked, in whsec_ form.
create function webhook._check_secret(secret text) returns text
language sql immutable strict
set search_path = pg_catalog, webhook, pg_temp
return 'whsec_' || translate(encode(webhook._secret_key(secret), 'base64'), E'\n', '');

-- API: Private
-- A fresh secret of 32 random bytes: gen_random_uuid() draws from
-- PostgreSQL's strong random source (122 random bits each); three of them
-- hashed give the 32 bytes.
create function webhook._generate_secret() returns text
language sql volatile strict
set search_path = pg_catalog, webhook, pg_temp
return 'whsec_' || encode(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())
                                 || uuid_send(gen_random_uuid())), 'base64');

-- -----------------------------------------------------------------------------
-- event type patterns (protocol/src/patterns.rs)
-- -----------------------------------------------------------------------------

-- API: Private
-- True when one of the patterns selects the event type: '*' everything,
-- 'a.b.*' anything under a.b., else the exact type. Patterns are checked by
-- webhook._check_patterns (words of [A-Za-z0-9_-]), so no ',' can occur and
-- only '_' needs escaping for LIKE. One expression, not strict: inlined
-- into the fan-out's query.
create function webhook._matches(patterns text[], event_type text) returns boolean
language sql immutable parallel safe
return event_type operator(pg_catalog.~~) any (pg_catalog.string_to_array(
    pg_catalog.replace(pg_catalog.replace(pg_catalog.array_to_string(patterns, ','), '_', '\_'), '*', '%'), ','));

-- -----------------------------------------------------------------------------
-- URLs (protocol/src/destination.rs)
-- -----------------------------------------------------------------------------

-- API: Private
-- The eight 16-bit groups of an IPv6 address.
create function webhook._ipv6_groups(p_ip inet) returns integer[]
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_text text := host(p_ip);
    v_v4 text[];
    v_left text[];
    v_right text[];
    v_all text[];
begin
    -- A trailing dotted IPv4 part is two groups.
    v_v4 := regexp_match(v_text, '^(.*:)([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)$');
    if v_v4 is not null then
        v_text := v_v4[1] || to_hex(v_v4[2]::integer * 256 + v_v4[3]::integer) || ':'
                  || to_hex(v_v4[4]::integer * 256 + v_v4[5]::integer);
    end if;
    if position('::' in v_text) > 0 then
        v_left := string_to_array(nullif(split_part(v_text, '::', 1), ''), ':');
        v_right := string_to_array(nullif(split_part(v_text, '::', 2), ''), ':');
        v_all := coalesce(v_left, '{}') || array_fill('0'::text, array[8 - coalesce(cardinality(v_left), 0)
                                                                       - coalesce(cardinality(v_right), 0)])
                 || coalesce(v_right, '{}');
    else
        v_all := string_to_array(v_text, ':');
    end if;
    return array(select ('x' || lpad(g, 8, '0'))::bit(32)::integer from unnest(v_all) g);
end
$$;

-- API: Private
-- An IPv6 address as a URL writes it (WHATWG): eight lower-case hex
-- groups, the first longest run of two or more zero groups as "::", no
-- dotted IPv4 part (inet's text writes ::ffff:10.0.0.1, a URL
-- [::ffff:a00:1]).
create function webhook._ipv6_text(p_ip inet) returns text
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    g integer[] := webhook._ipv6_groups(p_ip);
    v_start integer := 0;
    v_length integer := 1;
    v_run integer := 0;
    v_text text := '';
begin
    for i in 1..8 loop
        if g[i] = 0 then
            v_run := v_run + 1;
            if v_run > v_length then
                v_length := v_run;
                v_start := i - v_run + 1;
            end if;
        else
            v_run := 0;
        end if;
    end loop;
    for i in 1..8 loop
        if v_start > 0 and i between v_start and v_start + v_length - 1 then
            if i = v_start then
                v_text := v_text || case when i = 1 then '::' else ':' end;
            end if;
        else
            v_text := v_text || to_hex(g[i]) || case when i < 8 then ':' else '' end;
        end if;
    end loop;
    return v_text;
end
$$;

-- API: Private
-- The class of a non-public address (the worker's own list: loopback,
-- private, …), or null for a public one. An IPv6 address carrying an IPv4
-- one (mapped, compatible, NAT64, 6to4) gets the IPv4 verdict.
create function webhook._address_class(p_ip inet) returns text
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    g integer[];
begin
    if family(p_ip) = 6 then
        g := webhook._ipv6_groups(p_ip);
        if g[1:5] = '{0,0,0,0,0}' and g[6] = 65535
           or (g[1:6] = '{0,0,0,0,0,0}' and p_ip <> '::'::inet and p_ip <> '::1'::inet)
           or (g[1:6] = '{100,65435,0,0,0,0}') then
            return webhook._address_class(('0.0.0.0'::inet + (g[7]::bigint * 65536 + g[8])));
        end if;
        if g[1] = 8194 then -- 2002::/16, 6to4
            return webhook._address_class(('0.0.0.0'::inet + (g[2]::bigint * 65536 + g[3])));
        end if;
        return case
            when p_ip = '::1'::inet then 'loopback'
            when p_ip = '::'::inet then 'unspecified'
            when p_ip << 'fc00::/7'::inet or p_ip << '64:ff9b:1::/48'::inet or p_ip << 'fec0::/10'::inet then 'private'
            when p_ip << 'fe80::/10'::inet then 'link-local'
            when p_ip << 'ff00::/8'::inet then 'multicast or broadcast'
            when p_ip << '2001:db8::/32'::inet then 'reserved'
        end;
    end if;
    return case
        when p_ip << '127.0.0.0/8'::inet then 'loopback'
        when p_ip << '10.0.0.0/8'::inet or p_ip << '172.16.0.0/12'::inet or p_ip << '192.168.0.0/16'::inet
            then 'private'
        when p_ip << '169.254.0.0/16'::inet then 'link-local'
        when p_ip << '100.64.0.0/10'::inet then 'shared (carrier-grade NAT)'
        when p_ip << '0.0.0.0/8'::inet then 'unspecified'
        when p_ip << '224.0.0.0/4'::inet or p_ip = '255.255.255.255'::inet then 'multicast or broadcast'
        when p_ip << '240.0.0.0/4'::inet or p_ip << '192.0.0.0/24'::inet or p_ip << '198.18.0.0/15'::inet
             or p_ip << '192.0.2.0/24'::inet or p_ip << '198.51.100.0/24'::inet or p_ip << '203.0.113.0/24'::inet
            then 'reserved'
    end;
end
$$;

-- API: Private
-- Raises 22023 "invalid webhook URL: …" with the library's hint.
create function webhook._url_error(p_message text) returns void
language plpgsql immutable strict
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    raise exception 'invalid webhook URL: %', p_message
        using errcode = '22023', hint = 'Use an absolute http:// or https:// URL, such as ''https://example.com/webhooks''.';
end
$$;

-- API: Private
-- Checks a subscription URL and returns it normalised, as the library does,
-- for the URLs people write: http(s)://host[:port][/path][?query], the host
-- a DNS name, a dotted IPv4 address or a bracketed IPv6 one. The library
-- (a browser's parser) also accepts and rewrites other shapes (backslashes,
-- "." segments, blanks, non-ASCII names, 127.1); here those are refused with
-- what to write instead, so that what is stored is what any parser reads.
-- Refuses credentials, fragments and (unless allow_private_targets is on in
-- webhook.settings) loopback, private and link-local literals and
-- localhost, 42501. The worker checks every URL and resolved address again.
create function webhook._check_url(url text) returns text
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_url text;
    v_parts text[];
    v_scheme text;
    v_authority text;
    v_rest text;
    v_host text;
    v_port text;
    v_ip inet;
    v_class text;
begin
    if url is null then
        perform webhook._url_error('not a valid URL: the URL is null');
    end if;
    if octet_length(url) > 2048 then
        perform webhook._url_error(format('the URL is %s bytes long; at most 2048 are accepted', octet_length(url)));
    end if;
    v_url := btrim(url, E' \t\n\r\f\v');
    v_parts := regexp_match(v_url, '^([A-Za-z][A-Za-z0-9+.-]*):(.*)$');
    if v_parts is null then
        perform webhook._url_error('not a valid URL: relative URL without a base');
    end if;
    v_scheme := lower(v_parts[1]);
    if v_scheme not in ('http', 'https') then
        perform webhook._url_error(format('the scheme must be http or https, not %s', to_json(v_scheme)));
    end if;
    v_parts := regexp_match(v_parts[2], '^//([^/?#\\]*)(.*)$');
    if v_parts is null then
        perform webhook._url_error('not a valid URL: write the URL as ' || v_scheme || '://host/path');
    end if;
    v_authority := v_parts[1];
    v_rest := v_parts[2];
    if position('@' in v_authority) > 0 then
        perform webhook._url_error('the URL carries credentials (user:password@); pass them as a header instead');
    end if;
    if position('#' in v_rest) > 0 then
        perform webhook._url_error('the URL has a #fragment, which HTTP never sends');
    end if;
    if v_rest ~ '[^\x21-\x7e]|["<>`{}\\]' or (position('?' in v_rest) > 0
                                             and substr(v_rest, position('?' in v_rest)) ~ '''') then
        perform webhook._url_error('not a valid URL: its path or query holds characters to percent-encode (blanks, control or non-ASCII characters, or any of " < > ` { } \); write them %XX');
    end if;
    if split_part(v_rest, '?', 1) ~ '(^|/)\.\.?(/|$)' or split_part(v_rest, '?', 1) ~* '(^|/)(%2e|\.)(%2e|\.)?(/|$)' then
        perform webhook._url_error('not a valid URL: its path has "." or ".." segments; write the path they lead to');
    end if;
    -- Host and port.
    if starts_with(v_authority, '[') then
        v_parts := regexp_match(v_authority, '^\[([0-9A-Fa-f:.]+)\](:([0-9]*))?$');
        if v_parts is null then
            perform webhook._url_error('not a valid URL: invalid IPv6 address');
        end if;
        begin
            v_ip := v_parts[1]::inet;
        exception when invalid_text_representation then
            perform webhook._url_error('not a valid URL: invalid IPv6 address');
        end;
        if family(v_ip) <> 6 then
            perform webhook._url_error('not a valid URL: invalid IPv6 address');
        end if;
        v_host := '[' || webhook._ipv6_text(v_ip) || ']';
        v_port := v_parts[3];
    else
        v_parts := regexp_match(v_authority, '^([^:]*)(:([0-9]*))?$');
        if v_parts is null then
            perform webhook._url_error('not a valid URL: invalid port number');
        end if;
        v_host := lower(v_parts[1]);
        v_port := v_parts[3];
        if v_host = '' then
            perform webhook._url_error('not a valid URL: empty host');
        end if;
        if v_host ~ '[^\x21-\x7e]' then
            perform webhook._url_error('not a valid URL: the host name is not ASCII; write it in its xn-- (punycode) form');
        end if;
        if v_host !~ '^[a-z0-9._-]+$' or v_host ~ '(^|\.)\.' then
            perform webhook._url_error('not a valid URL: invalid domain character');
        end if;
        -- A browser reads a name ending in a number as an IPv4 address
        -- (127.1, 0x7f.1, 2130706433); only the dotted form is accepted here.
        if rtrim(v_host, '.') ~ '(^|\.)(0x[0-9a-f]*|[0-9]+)$' then
            if v_host !~ '^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$' then
                perform webhook._url_error('not a valid URL: invalid IPv4 address (write it a.b.c.d)');
            end if;
            v_ip := v_host::inet;
        end if;
    end if;
    if v_port is not null and v_port <> '' then
        if length(ltrim(v_port, '0')) > 5 or v_port::integer > 65535 then
            perform webhook._url_error('not a valid URL: invalid port number');
        end if;
        v_port := (v_port::integer)::text;
    end if;
    if v_port = '' or (v_scheme = 'http' and v_port = '80') or (v_scheme = 'https' and v_port = '443') then
        v_port := null;
    end if;
    if not webhook._setting('allow_private_targets')::boolean then
        if v_ip is not null then
            v_class := webhook._address_class(v_ip);
        elsif rtrim(v_host, '.') = 'localhost' or rtrim(v_host, '.') like '%.localhost' then
            v_class := 'loopback';
        end if;
        if v_class is not null then
            raise exception 'invalid webhook URL: the destination % is a % address', v_host, v_class
                using errcode = '42501',
                      hint = 'The role that installed pg_webhook may allow such targets with: update webhook.settings set value = ''on'' where name = ''allow_private_targets''';
        end if;
    end if;
    if v_rest = '' or starts_with(v_rest, '?') then
        v_rest := '/' || v_rest;
    end if;
    return v_scheme || '://' || v_host || coalesce(':' || v_port, '') || v_rest;
end
$$;

-- API: Private
-- The URL as readers see it: scheme, host and port, "/…" for any path or
-- query (input: a URL webhook._check_url returned).
create function webhook._redact_url(url text) returns text
language sql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
return (select m[1] || case when m[2] = '/' then '/' else '/…' end
        from regexp_match(url, '^([a-z]+://[^/?#]*)(.*)$') m);

-- =============================================================================
-- pg_webhook: roles and privileges
--
-- Two group roles a DBA grants to login roles:
--   webhook_worker  what pg-webhook-worker needs: claim, record, LISTEN.
--   webhook_reader  analysts: every table and view except the secrets.
-- (Role names starting with "pg_" are reserved by PostgreSQL, hence no
-- "pg_webhook_" prefix.) Roles are cluster-wide and outlive the extension, so
-- they are created only when missing.
-- Producers need nothing: webhook_publish (SECURITY DEFINER) and the capture
-- trigger (which switches to the owner for its insert only) enqueue as the
-- extension owner.
-- =============================================================================

-- API: Public
do $$
begin
    -- Two databases creating the extension at once race on these
    -- cluster-wide names; the loser's error only means the role exists.
    begin
        create role webhook_worker nologin;
    exception when duplicate_object or unique_violation then null;
    end;
    begin
        create role webhook_reader nologin;
    exception when duplicate_object or unique_violation then null;
    end;
end
$$;

revoke all on all tables in schema webhook from public;
revoke all on all sequences in schema webhook from public;
grant usage on schema webhook to webhook_worker, webhook_reader;

grant select on webhook.endpoints, webhook.events, webhook.deliveries, webhook.attempts, webhook.delivery_log
    to webhook_reader;

-- The worker's whole contract. Nothing in the worker touches a table directly.
revoke execute on function webhook._claim_deliveries(text, integer, interval) from public;
revoke execute on function webhook._record_attempts(text, bigint[], bigint[], integer[], timestamptz[],
    double precision[], integer[], text[], text[], text[], bigint[]) from public;
revoke execute on function webhook._next_due_ms() from public;
grant execute on function webhook._claim_deliveries(text, integer, interval) to webhook_worker;
grant execute on function webhook._record_attempts(text, bigint[], bigint[], integer[], timestamptz[],
    double precision[], integer[], text[], text[], text[], bigint[]) to webhook_worker;
grant execute on function webhook._next_due_ms() to webhook_worker;

-- Endpoint management is for the DBA (or whoever is granted these functions
-- and the table privileges they use); it runs with the caller's rights.
revoke execute on function webhook._enqueue(text, jsonb, text) from public;
revoke execute on function webhook._subscribe(text, text[], text, text, jsonb, jsonb, interval) from public;

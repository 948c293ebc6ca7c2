-- =============================================================================
-- pg_webhook: the schema `webhook`, which holds all of pg_webhook's data.
--
-- Functions live in the schema the extension is created in (public by
-- default) and carry the webhook_ prefix; private ones (`_` prefix) live in
-- the schema webhook.
-- `if not exists`: the 0.1.0 → 0.2.0 upgrade script replays the install
-- script in a database where the schema already exists.
-- =============================================================================

-- API: Public
create schema if not exists webhook;
comment on schema webhook is
    'pg_webhook data: endpoints, subscriptions, events, deliveries and attempts. Functions live in the extension''s schema with the webhook_ prefix.';

-- The rehearsed next release (tests/rehearsal/build.sh): the SQL flavor's
-- own step, what changed in sql/plain/ that the extension's step does not
-- bring (the counterparts of its C functions come from plain.sql).
comment on table webhook.settings is 'rehearsed';

-- The rehearsed next release (tests/rehearsal/build.sh): what its install
-- sources get, appended to sql/install/17_grants.sql: a new table kept in
-- dumps, a column, a function calling a new C function (its SQL
-- counterpart: plain.sql), a function's comment changed.
create table webhook.rehearsal (id bigint primary key, note text);
revoke all on webhook.rehearsal from public;
grant select on webhook.rehearsal to webhook_reader;
do $$
begin
    if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        perform pg_catalog.pg_extension_config_dump('webhook.rehearsal', '');
    end if;
end
$$;
alter table webhook.endpoints add column rehearsal_note text;
create function webhook._rehearsal_next() returns integer
language sql stable
return webhook._rehearsal_base() operator(pg_catalog.+) 1;
revoke all on function webhook._rehearsal_next() from public;
comment on function webhook._incarnation_of(bigint) is 'rehearsed';

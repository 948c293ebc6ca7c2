-- The rehearsed next release (tests/rehearsal/build.sh): the extension's
-- step, with what cargo-pgrx emits for the library's functions (one new,
-- one replaced, one dropped and made again, as a changed signature needs).
create table webhook.rehearsal (id bigint primary key, note text);
revoke all on webhook.rehearsal from public;
grant select on webhook.rehearsal to webhook_reader;
select pg_catalog.pg_extension_config_dump('webhook.rehearsal', '');
alter table webhook.endpoints add column rehearsal_note text;

CREATE  FUNCTION webhook."_rehearsal_base"() RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rehearsal_base_wrapper';
revoke all on function webhook._rehearsal_base() from public;

create function webhook._rehearsal_next() returns integer
language sql stable
return webhook._rehearsal_base() operator(pg_catalog.+) 1;
revoke all on function webhook._rehearsal_next() from public;

CREATE OR REPLACE FUNCTION webhook."_check_payload_size"(
	"bytes" bigint /* i64 */
) RETURNS bool /* Result < bool, ErrorReport > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_payload_size_wrapper';

drop function webhook._forget_slot();
CREATE  FUNCTION webhook."_forget_slot"() RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'forget_slot_wrapper';
revoke all on function webhook._forget_slot() from public;

comment on function webhook._incarnation_of(bigint) is 'rehearsed';

-- Everything pg_webhook defines in a database, one row of text per object,
-- comparable between databases (an upgraded one and a fresh install): see
-- catalog() in tests/e2e/upgrade.rs, and tests/pg-tle.sh.
with ext as (select oid from pg_extension where extname = 'pg_webhook'),
rels as (select c.* from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'webhook'),
fns as (
    select p.* from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where exists (select from pg_depend d
                  where d.objid = p.oid and d.classid = 'pg_proc'::regclass and d.deptype = 'e'
                    and d.refobjid = (select oid from ext))
          -- the SQL flavor's script: no extension, its schema and public's webhook_* functions
          or (not exists (select from ext)
              and (n.nspname = 'webhook' or (n.nspname = 'public' and p.proname like 'webhook\_%'))))
select 'rel ' || r.oid::regclass || ' kind=' || r.relkind::text || ' owner=' || pg_get_userbyid(r.relowner)
       || ' opts=' || coalesce(r.reloptions::text, '')
       || ' acl=' || coalesce(r.relacl::text, '') || ' bound=' || coalesce(pg_get_expr(r.relpartbound, r.oid), '')
       || ' comment=' || coalesce(obj_description(r.oid, 'pg_class'), '')
from rels r
union all
select 'col ' || r.oid::regclass || ' #' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text
       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
       || ' comment=' || coalesce(col_description(r.oid, a.attnum), '')
from rels r join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef d on d.adrelid = r.oid and d.adnum = a.attnum
union all
select 'con ' || con.conrelid::regclass || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
from pg_constraint con join rels r on r.oid = con.conrelid
union all
select 'idx ' || pg_get_indexdef(i.indexrelid)
from pg_index i join rels r on r.oid = i.indrelid
union all
select 'trg ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
from pg_trigger t join rels r on r.oid = t.tgrelid where not t.tgisinternal
union all
select 'fn ' || p.oid::regprocedure || ' owner=' || pg_get_userbyid(p.proowner) || ' acl=' || coalesce(p.proacl::text, '')
       || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') || E'\n' || pg_get_functiondef(p.oid)
from fns p where p.prokind <> 'a'
union all
select 'agg ' || p.oid::regprocedure || ' owner=' || pg_get_userbyid(p.proowner) || ' acl=' || coalesce(p.proacl::text, '')
       || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') || ' sfunc=' || a.aggtransfn::regprocedure
       || ' stype=' || a.aggtranstype::regtype || ' final=' || a.aggfinalfn::text || ' combine=' || a.aggcombinefn::text
       || ' init=' || coalesce(a.agginitval, '')
from fns p join pg_aggregate a on a.aggfnoid = p.oid
union all
select 'view ' || r.oid::regclass || E'\n' || pg_get_viewdef(r.oid) from rels r where r.relkind = 'v'
union all
select 'type ' || t.oid::regtype || ' ' || coalesce((select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                                                      from pg_enum e where e.enumtypid = t.oid), '')
       || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
from pg_type t join pg_namespace n on n.oid = t.typnamespace
where n.nspname = 'webhook' and t.typtype = 'e'
union all
select 'seq ' || s.seqrelid::regclass || ' ' || s.seqtypid::regtype || ' ' || s.seqstart || ' ' || s.seqincrement
       || ' ' || s.seqmax || ' ' || s.seqmin || ' ' || s.seqcache || ' ' || s.seqcycle
from pg_sequence s join rels r on r.oid = s.seqrelid
union all
select 'dump ' || cfg.tbl::regclass || ' ' || cfg.cond
from pg_extension e, unnest(e.extconfig, e.extcondition) as cfg(tbl, cond)
where e.extname = 'pg_webhook'
union all
select 'schema acl=' || coalesce(n.nspacl::text, '') || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
from pg_namespace n where n.nspname = 'webhook'
union all
select 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
from pg_depend d where d.refobjid = (select oid from ext) and d.deptype = 'e'

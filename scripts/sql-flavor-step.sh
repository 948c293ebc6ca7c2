#!/usr/bin/env bash
# Builds the SQL flavor's upgrade from the previous release,
# target/package/pg_webhook--<previous>--<version>.sql, and prints its path;
# prints nothing when the previous release had no SQL flavor (before 0.3.0).
# `bash scripts/package.sh --sql` runs this beside scripts/sql-flavor.sh.
#
# Made from the extension's step of the same versions
# (sql/pg_webhook--<previous>--<version>.sql, written by hand), the SQL
# flavor's sources (sql/plain/) and its own step
# (sql/plain/upgrade/pg_webhook--<previous>--<version>.sql, written by hand,
# optional), so that both flavors upgrade by the same hunks:
#   1. a guard: the database has the SQL flavor at <previous> (55000 otherwise);
#   2. the SQL flavor's own step: what changed in sql/plain/ that the
#      extension's step does not bring (its helpers, webhook.settings, a
#      counterpart changed while its C function's declaration was not).
#      First, so that the counterparts and the extension's hunks may use it;
#   3. the extension's step, read statement by statement (quotes, dollar
#      quotes and comments understood), with each C function's statement
#      (`create function … language c` / MODULE_PATHNAME / $libdir) replaced,
#      where it stands, by that function's SQL counterpart as sql/plain/
#      defines it (its last definition there, as `create or replace`): so a
#      hunk that drops and makes a C function again, then grants it, does
#      the same to the counterpart. A C function without a counterpart, a
#      top-level ALTER EXTENSION or a library reference anywhere else fails
#      the build, saying where: a step that cannot run without the library
#      fails here, not at a user's. Each top-level
#      pg_extension_config_dump() is made conditional (a script install is
#      no extension), @extschema@ = public;
#   4. EXECUTE on every function taken from PUBLIC, by the install's own
#      sql/plain/85_no_public.sql, and webhook._sql_flavor_version() saying
#      <version>.
# The same text runs with psql -f and as a pg_tle update path.
#
# Released scripts never change (tests/e2e/upgrade.rs): a release freezes
# its SQL flavor's install into tests/fixtures/sql-flavor/, which the next
# release's step is tested from (tests/e2e/sql_flavor_upgrade.rs).
#
# Where from, where to, which version: scripts/sql-flavor-paths.sh.
set -euo pipefail
source "$(dirname "$0")/sql-flavor-paths.sh"
# The first release with a SQL flavor: no step starts before it.
first_sql_release=0.3.0

steps=("$sources"/pg_webhook--*--"$version".sql)
[ -e "${steps[0]}" ] || exit 0
[ "${#steps[@]}" = 1 ] || { echo "sql-flavor-step.sh: more than one step to $version: ${steps[*]}" >&2; exit 1; }
ext_step=${steps[0]}
previous=${ext_step##*/pg_webhook--}
previous=${previous%%--*}
# No SQL flavor before its first release, hence no step from there.
[ "$(printf '%s\n%s\n' "$first_sql_release" "$previous" | sort -V | head -1)" = "$first_sql_release" ] || exit 0
out="$out_dir/pg_webhook--$previous--$version.sql"
trap 'rm -f "$out.tmp" "$out.part"' EXIT
python3 - "$sources" "$ext_step" >"$out.tmp" <<'PY'
import glob, os, re, sys

sources, ext_step = sys.argv[1:]


def fail(where, why):
    sys.exit(f"sql-flavor-step.sh: {where}: {why}")


def in_atomic_body(code):
    """Whether a ; ends a statement inside a function's BEGIN ATOMIC … END
    body (SQL-standard: its statements end with ; too), as psql tells:
    more BEGIN and CASE than END so far in a CREATE FUNCTION/PROCEDURE."""
    if not re.match(r"\s*create\s+(or\s+replace\s+)?(function|procedure)\b", code, re.I):
        return False
    words = re.findall(r"\b(begin|case|end)\b", code.lower())
    return words.count("begin") + words.count("case") > words.count("end")


def statements(text, where):
    """Splits `text` into statements: (text, bare, code) of each: its text
    with the comments and blank lines before it; bare, the same without
    comments; code, bare with what quotes and dollar quotes hold blanked
    too (to look at its words only). Fails on a quote or comment never
    closed, or text after the last ;."""
    out, start, i, n, bare, code = [], 0, 0, len(text), [], []

    def at():
        return f"{where}:{text.count(chr(10), 0, i) + 1}"

    while i < n:
        c = text[i]
        if text.startswith("--", i):
            j = text.find("\n", i)
            j, blank, kept = (n if j < 0 else j), " ", " "
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while depth and j < n:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                fail(at(), "a comment never ends")
            blank = kept = " "
        elif c in "'\"":
            # E'…' strings take backslash escapes; others only doubling.
            escapes = c == "'" and text[i - 1 : i] in ("e", "E") and not text[i - 2 : i - 1].isalnum()
            j = i + 1
            while True:
                if j >= n:
                    fail(at(), "a quote never ends")
                if escapes and text[j] == "\\":
                    j += 2
                elif text.startswith(c * 2, j):
                    j += 2
                elif text[j] == c:
                    j += 1
                    break
                else:
                    j += 1
            blank, kept = c + c, text[i:j]
        elif c == "$" and not re.match(r"[\w$]", text[i - 1 : i] or " ") \
                and (m := re.match(r"\$([A-Za-z_]\w*)?\$", text[i:])):
            tag = m.group(0)
            j = text.find(tag, i + len(tag))
            if j < 0:
                fail(at(), f"the dollar quote {tag} never ends")
            j, blank = j + len(tag), "$$"
            kept = text[i:j]
        else:
            j, blank, kept = i + 1, c, c
        code.append(blank)
        bare.append(kept)
        i = j
        if c == ";" and not in_atomic_body("".join(code)):
            out.append((text[start:i], "".join(bare).strip(), "".join(code)))
            start, bare, code = i, [], []
    if "".join(code).strip():
        fail(at(), "a statement without its ending ;")
    return out, text[start:]


CREATE_FUNCTION = re.compile(r"^\s*create\s+(?:or\s+replace\s+)?function\s+([^\s(]+)\s*\(", re.I)
LEADING_CREATE = re.compile(r"^((?:\s*(?:--[^\n]*\n|/\*.*?\*/))*\s*)create\s+(?:or\s+replace\s+)?function", re.I | re.S)
NAMES_LIBRARY = re.compile(r"module_pathname|\$libdir", re.I)
CONFIG_DUMP = re.compile(r"^select\s+((?:pg_catalog\s*\.\s*)?pg_extension_config_dump\s*\(.*\))\s*;$", re.I | re.S)


def function_name(raw):
    """webhook."_id_namespace" → webhook._id_namespace; unqualified: public's."""
    name = raw.replace('"', "").replace("@extschema@.", "public.").lower()
    return name if "." in name else "public." + name


def without_comments_before(stmt):
    return re.sub(r"^(?:\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/))*\s*", "", stmt, flags=re.S)


def is_c_function(bare, code):
    return CREATE_FUNCTION.match(code) and (NAMES_LIBRARY.search(bare) or re.search(r"\blanguage\s+c\b", code, re.I))


# The SQL counterparts: the last definition of each function in sql/plain/.
counterparts = {}
for path in sorted(glob.glob(os.path.join(sources, "plain", "[0-9]*.sql"))):
    with open(path) as f:
        for stmt, bare, code in statements(f.read(), path)[0]:
            if CREATE_FUNCTION.match(code):
                counterparts[function_name(CREATE_FUNCTION.match(bare).group(1))] = stmt

with open(ext_step) as f:
    text = f.read()
stmts, rest = statements(text, ext_step)
print(f"\n-- ---- sql/{os.path.basename(ext_step)}, its C functions replaced by their SQL counterparts")
offset = 0
for stmt, bare, code in stmts:
    body = without_comments_before(stmt)
    before = stmt[: len(stmt) - len(body)]  # the comments before it, kept
    where = f"{ext_step}:{text.count(chr(10), 0, offset + len(before)) + 1}"
    offset += len(stmt)
    if is_c_function(bare, code):
        name = function_name(CREATE_FUNCTION.match(bare).group(1))
        if name not in counterparts:
            fail(where, f"the C function {name} has no SQL counterpart in sql/plain/")
        counterpart = LEADING_CREATE.sub(r"\1create or replace function", counterparts[name].lstrip("\n"), count=1)
        sys.stdout.write(before.rstrip(" \t"))
        print(f"-- (the C function {name}: its SQL counterpart, from sql/plain/)")
        sys.stdout.write(counterpart.replace("@extschema@", "public"))
        continue
    if NAMES_LIBRARY.search(bare):
        fail(where, "the library named outside a C function's create statement")
    if re.match(r"\s*alter\s+extension\b", code, re.I):
        fail(where, "a top-level ALTER EXTENSION; write it in a DO block, if the extension exists")
    dump = CONFIG_DUMP.match(bare)
    if dump:
        sys.stdout.write(before)
        sys.stdout.write("do $config_dump$ begin if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') "
                         f"then perform {dump.group(1)}; end if; end $config_dump$;")
        continue
    sys.stdout.write(stmt.replace("@extschema@", "public"))
sys.stdout.write(rest)
PY
{
    cat <<HEADER
-- pg_webhook $previous → $version, SQL flavor. Generated by scripts/sql-flavor-step.sh
-- from sql/pg_webhook--$previous--$version.sql, sql/plain/ and sql/plain/upgrade/;
-- do not edit. Run by the role that installed pg_webhook, into a database
-- that has its SQL flavor at $previous:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f pg_webhook--$previous--$version.sql
-- or, as a pg_tle extension, through pgtle.install_update_path. See the
-- README, "Installing on a managed service".
do \$guard\$
begin
    if pg_catalog.to_regprocedure('webhook._sql_flavor_version()') is null then
        raise exception 'pg_webhook''s SQL flavor is not installed in this database'
            using errcode = '55000',
                  hint = 'The extension upgrades with ALTER EXTENSION pg_webhook UPDATE.';
    end if;
    if webhook._sql_flavor_version() operator(pg_catalog.<>) '$previous' then
        raise exception 'this script upgrades pg_webhook $previous to $version; this database has %',
                webhook._sql_flavor_version()
            using errcode = '55000',
                  hint = 'Run the upgrade scripts from its version on, one release after the other.';
    end if;
end
\$guard\$;
set search_path = public;
HEADER
    plain_step="$sources/plain/upgrade/pg_webhook--$previous--$version.sql"
    if [ -f "$plain_step" ]; then
        printf '\n-- ---- %s\n' "sql/plain/upgrade/${plain_step##*/}"
        sed -e 's/@extschema@/public/g' "$plain_step"
    fi
    cat "$out.tmp"
    printf '\n-- ---- %s\n' "sql/plain/85_no_public.sql, as the install"
    cat "$sources/plain/85_no_public.sql"
    cat <<FOOTER

-- ---- the version
create or replace function webhook._sql_flavor_version() returns text
language sql immutable parallel safe
return '$version';
FOOTER
} >"$out.part"
mv "$out.part" "$out"
rm -f "$out.tmp"
echo "$out"

# Django's migrate for a deploy, in the release's Django (set up by the manage.py steps before it, manage_many.py).
# It prints the plan first (one `<mark> {json}` line per migration it will apply, in order: the summary shows
# them), then migrates. `part`:
#   before  before the switch: all but the after-deploy migrations (listed, or marked the django-safemigrate way);
#           refused when one that runs now depends on one held back. With migration-safety refuse, a contract
#           operation among them (it breaks the release still serving) stops it before anything is migrated;
#           with warn, it is a warning;
#   after   once every host serves the new release: the rest.
# The classifier (migrations.py, its source an argument) says what each operation is and which are after-deploy.
# On PostgreSQL the whole migrate holds an advisory lock (keys: a constant and the database's name), so two
# migrates against one database never overlap; a second one says who holds the lock while it waits. Then the
# session's lock_timeout (and statement_timeout when given) bound each statement, so a migration stuck behind a
# long transaction fails fast instead of queueing every query of the live site behind its lock request.
# Arguments: warning marker, plan marker, part, lock timeout (s, 0: none), statement timeout (s, '': none),
# after-deploy migrations (app.name, comma-separated), migration-safety (refuse, warn, off), the classifier.
import json
import sys

from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

warn, mark, part, lock_timeout, statement_timeout, held, safety, classifier = sys.argv[1:9]
held_back = {tuple(n.split(".", 1)) for n in held.split(",") if n}
connection = connections[DEFAULT_DB_ALIAS]
# The advisory lock's first key ("djmg"); the second is the database name's hash: one lock per database.
LOCK_CLASS = 0x646A6D67
LOCK_KEYS = "%s, hashtext(current_database())"
# The statement that failed (a lock wait that timed out names its table).
last_sql = []


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def pending():
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    plan = [m for m, backwards in executor.migration_plan(graph.leaf_nodes()) if not backwards]
    unknown = sorted(".".join(k) for k in held_back if k not in graph.nodes)
    if unknown:
        print(f"{warn} after-deploy-migrations names {', '.join(unknown)}: not a migration of this release")
    return graph, plan


def classified():
    """The classifier's verdict on each unapplied migration, by (app, name); none with migration-safety off."""
    if safety == "off":
        return {}
    namespace = {"__name__": "django_deploy_migrations"}
    exec(compile(classifier, "migrations.py", "exec"), namespace)
    return {(c["app"], c["name"]): c for c in namespace["plan"](sorted(".".join(k) for k in held_back))}


def contract_ops(c):
    return [o for o in c.get("operations", []) if o.get("class") == "contract"]


def judge(plan, verdicts, later):
    """migration-safety on what runs before the switch: contract operations refused (or warned about)."""
    found = []
    for m in plan:
        k = (m.app_label, m.name)
        for o in [] if k in later else contract_ops(verdicts.get(k, {})):
            hint = f" ({o['hint']})" if o.get("hint") else ""
            found.append(f"{m.app_label}.{m.name}: {o['op']}: {o['describe']}{hint}")
    if not found:
        return
    names = sorted({f.split(":", 1)[0] for f in found})
    if safety == "refuse":
        fail(
            "migration-safety refuse: these migrations would run before the switch, and each has an operation"
            " that breaks the release still serving (contract):\n- " + "\n- ".join(found) + "\nNothing was"
            f" migrated and no host changed. Run them after every host switched (after-deploy-migrations:"
            f" {','.join(names)}, or django-safemigrate's Safe.after_deploy()), split them (expand now, contract"
            " in a later release), or set migration-safety: warn to run them anyway."
        )
    for f in found:
        print(f"{warn} contract migration before the switch (migration-safety warn): {f}", flush=True)


def plan_now():
    graph, plan = pending()
    verdicts = classified() if part == "before" else {}
    keys = [(m.app_label, m.name) for m in plan]
    later = {k for k in keys if k in held_back or verdicts.get(k, {}).get("after_deploy")} if part == "before" else set()
    for k in keys:
        if k in later:
            continue
        needs = [".".join(a) for a in graph.forwards_plan(k) if a in later]
        if needs:
            fail(
                f"migration {'.'.join(k)} runs before the switch but depends on {', '.join(needs)}, which"
                " runs after deploy (after-deploy-migrations or django-safemigrate's marker) once every host"
                f" serves the new release: mark {'.'.join(k)} after-deploy too, or remove the dependency"
            )
    when = "after-deploy" if part == "after" else "before-switch"
    for m in plan:
        k = (m.app_label, m.name)
        verdict = verdicts.get(k, {})
        ops = [o["describe"] + ("" if o["class"] == "expand" else f" ({o['class']})") for o in verdict.get("operations", [])]
        print(
            mark,
            json.dumps(
                {
                    "app": m.app_label,
                    "name": m.name,
                    "when": "after-deploy" if k in later else when,
                    "class": verdict.get("class"),
                    "operations": ops or [op.describe() for op in m.operations],
                }
            ),
            flush=True,
        )
    judge(plan, verdicts, later)
    return keys, later


def migrate(keys, later):
    if not later:
        return call_command("migrate", interactive=False)
    # Each app to its last migration that is not held back (the check above: none of them needs one held back).
    apps = {}
    for app, name in keys:
        if (app, name) not in later:
            apps[app] = name
        else:
            apps.setdefault(app, None)
    for app, name in apps.items():
        if name:
            call_command("migrate", app, name, interactive=False)


def remember(execute, sql, params, many, context):
    try:
        return execute(sql, params, many, context)
    except Exception:
        last_sql[:] = [sql]
        raise


def holder(c):
    c.execute(
        "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l"
        " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.objsubid = 2 AND l.classid = %s AND l.objid = hashtext(current_database())::oid",
        [LOCK_CLASS],
    )
    row = c.fetchone()
    if not row:
        return "a session that has just let it go"
    pid, name, addr, since = row
    return f"PostgreSQL backend {pid} ({name or 'no application_name'}, from {addr or 'a local socket'}, connected {since:%Y-%m-%d %H:%M:%S %Z})"


def locked(run):
    if connection.vendor != "postgresql":
        return run()
    with connection.cursor() as c:
        c.execute("SELECT set_config('application_name', 'django-deploy migrate', false)")
        # Waiting for the other migrate is not a lock wait that stalls the site: no timeout but command-timeout.
        c.execute("SELECT set_config('lock_timeout', '0', false)")
        c.execute(f"SELECT pg_try_advisory_lock({LOCK_KEYS})", [LOCK_CLASS])
        if not c.fetchone()[0]:
            print(f"{warn} another migrate holds this database's migration lock: waiting for {holder(c)}", flush=True)
            c.execute(f"SELECT pg_advisory_lock({LOCK_KEYS})", [LOCK_CLASS])
            print("migration lock taken: the other migrate has ended", flush=True)
        c.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(lock_timeout)}s"])
        if statement_timeout:
            c.execute("SELECT set_config('statement_timeout', %s, false)", [f"{int(statement_timeout)}s"])
    try:
        return run()
    finally:
        try:
            with connection.cursor() as c:
                c.execute("RESET lock_timeout; RESET statement_timeout")
                c.execute(f"SELECT pg_advisory_unlock({LOCK_KEYS})", [LOCK_CLASS])
        except Exception:
            pass  # the session is gone, and its locks with it


def explain(e):
    code = getattr(e, "pgcode", None) or getattr(e.__cause__, "pgcode", None)
    sql = " ".join((last_sql[0] if last_sql else "(unknown)").split())[:400]
    if code == "55P03":
        return (
            f"migrate waited migrate-lock-timeout ({lock_timeout} s) for a lock on the database and gave up: another"
            " session holds a lock on a table this migration changes (a long transaction or query). Waiting longer"
            " would have queued every query of the live site on that table behind it. The statement waiting was:"
            f" {sql}. That migration was rolled back (migrations before it in this run stay applied). Find the"
            " blocking session (pg_stat_activity, pg_blocking_pids), end it or let it finish, and deploy again;"
            " or raise migrate-lock-timeout."
        )
    if code == "57014" and statement_timeout:
        return (
            f"a statement of migrate ran longer than migrate-statement-timeout ({statement_timeout} s) and was"
            f" cancelled: {sql}. That migration was rolled back (migrations before it in this run stay applied)."
        )
    return None


def main():
    with connection.execute_wrapper(remember):
        try:
            locked(lambda: migrate(*plan_now()))
        except SystemExit:
            raise
        except Exception as e:
            why = explain(e)
            if why is None:
                raise
            fail(f"{type(e).__name__}: {str(e).strip()}\n{why}")


main()

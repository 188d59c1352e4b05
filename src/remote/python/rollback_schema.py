# Before `mode: rollback` makes an older release live: the migrations applied to the database that the target
# release does not have (it would run against a schema it does not know), read in the LIVE release's Django (which
# has their files), classified by the classifier (migrations.py, its source an argument). One `<mark> {json}` line
# per such migration (the summary lists them). Any contract operation among them (a dropped or renamed column or
# table...: the target's code may still use what it removed) refuses the rollback unless it is allowed.
# Exit status 3 refuses (any other failure of this program or of the live release's Django only skips the check).
# Only the project's own migrations are compared (their modules inside the live release); an app's migrations
# that live in the virtualenv are not the release's files.
# Arguments: plan marker, target release directory, target name, allowed (true/false), the classifier.
import json
import os
import sys
from importlib import import_module

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

mark, target_dir, target, allowed, classifier = sys.argv[1:6]
live_dir = os.path.realpath(os.getcwd())


def migrations_dir(app):
    module, _ = MigrationLoader.migrations_module(app)
    try:
        path = list(getattr(import_module(module), "__path__", []))
    except Exception:
        return None
    return os.path.realpath(path[0]) if path else None


def missing():
    """Applied migrations of the project whose file the target release does not have, in the order applied."""
    recorder = MigrationRecorder(connections[DEFAULT_DB_ALIAS])
    if not recorder.has_table():
        return []
    rows = recorder.migration_qs.order_by("applied", "id").values_list("app", "name")
    dirs, out = {}, []
    for app, name in rows:
        if app not in dirs:
            dirs[app] = migrations_dir(app)
        d = dirs[app]
        if not d or not d.startswith(live_dir + os.sep):
            continue
        there = os.path.join(target_dir, os.path.relpath(d, live_dir), name + ".py")
        if not os.path.exists(there):
            out.append(f"{app}.{name}")
    return out


def main():
    names = missing()
    if not names:
        print(f"every migration applied to the database is in {target}")
        return
    namespace = {"__name__": "django_deploy_migrations"}
    exec(compile(classifier, "migrations.py", "exec"), namespace)
    verdicts = list(namespace["classify"](names))
    contract = []
    for v in verdicts:
        ops = v.get("operations", [])
        print(
            mark,
            json.dumps(
                {
                    "app": v["app"],
                    "name": v["name"],
                    "when": "not-in-target",
                    "class": v.get("class"),
                    "operations": [o["describe"] + ("" if o["class"] == "expand" else f" ({o['class']})") for o in ops],
                }
            ),
            flush=True,
        )
        contract += [f"{v['app']}.{v['name']}: {o['op']}: {o['describe']}" for o in ops if o["class"] == "contract"]
    listed = ", ".join(names)
    if contract and allowed != "true":
        print(
            f"rollback to {target} refused: the database has migrations applied that {target} does not have"
            f" ({listed}), and these change the schema in a way its code may not work with (contract):\n- "
            + "\n- ".join(contract)
            + f"\n{target}'s code may still read or write what they removed or renamed. Deploy a fix forward, or"
            " set allow-contract-rollback: true to roll back anyway (the schema stays as it is).",
            file=sys.stderr,
        )
        sys.exit(3)  # ROLLBACK_REFUSED in django.ts: any other failure only skips the check
    why = "allowed by allow-contract-rollback" if contract else "expand only: the old code does not see them"
    print(f"{target} goes live against migrations it does not have ({listed}): {why}")


main()

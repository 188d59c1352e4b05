# Classifies migrations, operation by operation, with Django's own loader and operation classes (no SQL is parsed):
# expand (safe while the previous release keeps serving), contract (breaks it), review (cannot be known statically).
# Runs in a Django that is set up (manage_many.py, or imported after django.setup()); one JSON line per migration:
#   {"app", "name", "file", "after_deploy", "class", "operations": [{"op", "describe", "class", "hint"?, "line"?}]}
# with "sql" (or "sql_error", one line) under --sql, and {"app", "name", "error"} for a name it cannot find.
# Sub-commands (every value is an argument):
#   classify [--sql] [--after-deploy app.name,...] [--files] X...  X: app.migration names, or with --files the
#                                                                   paths of migration files
#   plan [--sql] [--after-deploy app.name,...]   the unapplied migrations, in the order `migrate` applies them
# after_deploy: the django-safemigrate convention (`safe = Safe.after_deploy()`; its enum of 2.x-4.x and the
# `False` of 1.x), detected without importing the package, or a name listed in --after-deploy.
# Exit status: 0; 1 when a name was not found (its error line says so); 2 on bad arguments.
import ast
import io
import json
import os
import sys

from django.apps import apps
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections, migrations as m
from django.db.migrations.loader import MigrationLoader
from django.db.models.fields import NOT_PROVIDED

HINTS = {
    "RemoveField": "expand/contract: release code that no longer reads or writes the field first (give it null=True or a db_default), drop it in a later release or run this after deploy",
    "DeleteModel": "expand/contract: release code that no longer uses the model first, delete it in a later release or run this after deploy",
    "RenameField": "the running release still uses the old column: keep it with db_column='<old name>' (no SQL), or add the new field, copy, switch, and drop the old one later",
    "RenameModel": "the running release still uses the old table: keep it with Meta.db_table='<old table>' (no SQL), or copy in steps",
    "AlterModelTable": "the running release still uses the old table name: rename in steps (a view or a copy) or run this after deploy",
    "not_null": "Django fills existing rows, then drops the default from the column: the running release inserts rows without it and fails on NOT NULL. Add it with null=True (or db_default, Django >= 5.0) first, tighten it in a later release",
    "to_not_null": "the running release may still write NULL here: backfill and make it NOT NULL in a later release (after every host runs code that always sets it)",
    "type": "the running release reads and writes the old type: add a new column, write both, switch reads, drop the old one later",
    "column": "the running release uses the old column name: add the new column, copy, switch, drop the old one later",
    "unique": "the running release may insert duplicates and fail; existing duplicates fail the migration: deduplicate and enforce uniqueness in code first",
    "index": "on PostgreSQL this locks writes while the index builds: AddIndexConcurrently (django.contrib.postgres.operations, in a non-atomic migration) does not",
    "check": "fails if existing rows violate it, and the running release may insert rows that do: make sure its code already satisfies it",
    "review": "cannot be classified statically: check that what it does is safe while the previous release serves",
}
EXPAND_OPS = ("CreateModel", "AddIndex", "AddIndexConcurrently", "RemoveIndex", "RemoveIndexConcurrently", "RenameIndex",
              "RemoveConstraint", "AlterIndexTogether", "AlterModelOptions", "AlterModelManagers",
              "AlterModelTableComment", "CreateExtension", "BtreeGistExtension", "BtreeGinExtension",
              "CITextExtension", "CryptoExtension", "HStoreExtension", "TrigramExtension", "UnaccentExtension",
              "CreateCollation", "RemoveCollation")
CONTRACT_OPS = ("RemoveField", "DeleteModel", "RenameField", "RenameModel", "AlterModelTable")
REVIEW_OPS = ("RunPython", "RunSQL", "SeparateDatabaseAndState", "AlterOrderWithRespectTo")


def op_names(op):
    return [c.__name__ for c in type(op).__mro__]


def db_default(field):
    return getattr(field, "db_default", NOT_PROVIDED) is not NOT_PROVIDED


def column_type(field):
    # The column type as the project's backend writes it (no connection is made for it); the field's class and
    # size when the backend cannot say.
    try:
        kind = field.db_type(connections[DEFAULT_DB_ALIAS])
        if kind is not None:
            return kind
    except Exception:
        pass
    _, path, _, kwargs = field.deconstruct()
    return (path, kwargs.get("max_length"), kwargs.get("max_digits"), kwargs.get("decimal_places"))


def add_field(op):
    f = op.field
    if f.many_to_many:
        return "expand", None
    if f.null or db_default(f):
        return ("contract", HINTS["unique"]) if f.unique and not f.primary_key and not f.null else ("expand", None)
    return "contract", HINTS["not_null"]


def alter_field(op, old):
    # Fields in migrations are not bound to a model: no .column, their db_column or the operation's name.
    new = op.field
    if old is None:
        return "review", "the field before this migration is unknown: " + HINTS["review"]
    if old.many_to_many or new.many_to_many:
        return ("expand", None) if old.many_to_many and new.many_to_many else ("contract", HINTS["type"])
    if (old.db_column or op.name) != (new.db_column or op.name):
        return "contract", HINTS["column"]
    before, after = column_type(old), column_type(new)
    if before != after and not wider(old, new):
        return "contract", HINTS["type"]
    if old.null and not new.null and not db_default(new):
        return "contract", HINTS["to_not_null"]
    if new.unique and not old.unique and not new.primary_key:
        return "contract", HINTS["unique"]
    if new.db_index and not old.db_index and not new.unique:
        return "expand", HINTS["index"]
    return "expand", None


def wider(old, new):
    # A longer varchar of the same field class keeps every value the running release writes.
    if type(old) is not type(new) or old.max_length is None or new.max_length is None:
        return False
    return new.max_length >= old.max_length


def add_constraint(op):
    names = op_names(op.constraint)
    if "CheckConstraint" in names:
        return "expand", HINTS["check"]
    if "UniqueConstraint" in names or "ExclusionConstraint" in names:
        return "contract", HINTS["unique"]
    return "review", HINTS["review"]


def unique_together(op, state, app):
    model = state.models.get((app, op.name_lower))
    before = set(model.options.get("unique_together", ()) if model else ())
    after = set(op.option_value or ())
    return ("contract", HINTS["unique"]) if after - before else ("expand", None)


def old_field(state, app, op):
    model = state.models.get((app, op.model_name_lower))
    return model.fields.get(op.name) if model else None


def classify_op(op, state, app):
    names = op_names(op)
    own = type(op).__name__
    if isinstance(op, m.AddField):
        kind, hint = add_field(op)
    elif isinstance(op, m.AlterField):
        kind, hint = alter_field(op, old_field(state, app, op) if state else None)
    elif isinstance(op, m.AddConstraint):
        kind, hint = add_constraint(op)
    elif isinstance(op, m.AlterUniqueTogether):
        kind, hint = unique_together(op, state, app) if state else ("review", HINTS["review"])
    elif "AddIndexConcurrently" in names:
        kind, hint = "expand", None
    elif isinstance(op, m.AddIndex):
        kind, hint = "expand", HINTS["index"]
    elif own in REVIEW_OPS or any(n in names for n in ("RunPython", "RunSQL", "SeparateDatabaseAndState")):
        kind, hint = "review", HINTS["review"]
    elif any(n in names for n in CONTRACT_OPS):
        kind = "contract"
        hint = HINTS[next(n for n in names if n in CONTRACT_OPS)]
    elif any(n in names for n in EXPAND_OPS):
        kind, hint = "expand", None
    else:
        kind, hint = "review", "an operation this check does not know (" + own + "): " + HINTS["review"]
    out = {"op": own, "describe": op.describe(), "class": kind}
    if hint:
        out["hint"] = hint
    return out


def marked_after_deploy(migration):
    # django-safemigrate: `Safe.after_deploy()` (5.x: an object whose `when` is an enum member with value
    # "after_deploy"), `Safe.after_deploy` (2.x-4.x: an enum member), `False` (1.x).
    safe = getattr(migration, "safe", None)
    if safe is False:
        return True
    if safe is None or safe is True:
        return False
    when = getattr(safe, "when", safe)
    return "after_deploy" in (str(getattr(when, "value", "")), str(when).rsplit(".", 1)[-1], str(safe))


def operation_lines(path, count):
    # The line of each operation, when the file lists them literally (`operations = [...]` in a class).
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "operations" for t in node.targets):
            # `[...]`, or `[...] + more`: the listed ones.
            value = node.value.left if isinstance(node.value, ast.BinOp) else node.value
            if isinstance(value, ast.List) and len(value.elts) <= count:
                return [e.lineno for e in value.elts]
    return []


def sql_of(app, name):
    out = io.StringIO()
    try:
        call_command("sqlmigrate", app, name, stdout=out, no_color=True)
    except BaseException as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return {"sql_error": type(e).__name__ + ": " + first}
    return {"sql": out.getvalue()}


def classify_one(loader, key, after_deploy, with_sql=False):
    """The JSON-ready classification of migration `key` ((app, name)), found in `loader` (a MigrationLoader)."""
    app, name = key
    migration = loader.disk_migrations.get(key)
    if migration is None:
        return {"app": app, "name": name, "error": "no migration " + app + "." + name + " in this project"}
    try:
        state = loader.project_state(key, at_end=False) if key in loader.graph.nodes else None
    except Exception:
        state = None
    ops = []
    for op in migration.operations:
        ops.append(classify_op(op, state, app))
        if state is not None:
            try:
                op.state_forwards(app, state)
            except Exception:
                state = None
    path = getattr(sys.modules.get(type(migration).__module__), "__file__", None)
    for op, line in zip(ops, operation_lines(path, len(ops)) if path else []):
        op["line"] = line
    kinds = {o["class"] for o in ops}
    out = {
        "app": app, "name": name, "file": os.path.abspath(path) if path else None,
        "after_deploy": marked_after_deploy(migration) or (app + "." + name) in after_deploy,
        "class": "contract" if "contract" in kinds else "review" if "review" in kinds else "expand",
        "operations": ops,
    }
    if with_sql:
        out.update(sql_of(app, name))
    return out


def classify(names, after_deploy=(), with_sql=False, loader=None):
    """Classifies the migrations named `app.migration` (on disk), in the order given; a generator of dicts."""
    loader = loader or MigrationLoader(None, ignore_no_migrations=True)
    for n in names:
        app, _, name = n.partition(".")
        yield classify_one(loader, (app, name), set(after_deploy), with_sql)


def names_of_files(paths):
    """app.migration for each path that is a migration file of an installed app (others are left out)."""
    dirs = {}
    for config in apps.get_app_configs():
        module, _ = MigrationLoader.migrations_module(config.label)
        try:
            package = __import__(module, fromlist=["__name__"]) if module else None
        except ImportError:
            package = None
        for d in getattr(package, "__path__", []) or []:
            dirs[os.path.realpath(d)] = config.label
    out = []
    for p in paths:
        real = os.path.realpath(p)
        base = os.path.basename(real)
        label = dirs.get(os.path.dirname(real))
        if label and base.endswith(".py") and not base.startswith("__"):
            out.append(label + "." + base[:-3])
    return out


def plan(after_deploy=(), with_sql=False):
    """The unapplied migrations in the order `migrate` applies them, classified (needs the database)."""
    from django.db.migrations.executor import MigrationExecutor
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    steps = executor.migration_plan(executor.loader.graph.leaf_nodes())
    for migration, _ in steps:
        yield classify_one(executor.loader, (migration.app_label, migration.name), set(after_deploy), with_sql)


def main(argv):
    usage = "usage: migrations.py classify [--sql] [--after-deploy app.name,...] [--files] NAME... | plan [--sql] [--after-deploy app.name,...]"
    if not argv or argv[0] not in ("classify", "plan"):
        print(usage, file=sys.stderr)
        return 2
    command, rest, after, with_sql, files = argv[0], list(argv[1:]), [], False, False
    while rest and rest[0].startswith("--"):
        flag = rest.pop(0)
        if flag == "--sql":
            with_sql = True
        elif flag == "--files":
            files = True
        elif flag == "--after-deploy" and rest:
            after += [n.strip() for n in rest.pop(0).split(",") if n.strip()]
        elif flag == "--":
            break
        else:
            print("migrations.py: unknown option " + flag + "; " + usage, file=sys.stderr)
            return 2
    bad = [n for n in after + ([] if files else rest) if n.count(".") != 1 or n.startswith(".") or n.endswith(".")]
    if bad or (command == "plan" and rest):
        print("migrations.py: expected app_label.migration_name, got " + ", ".join(bad or rest), file=sys.stderr)
        return 2
    found = plan(after, with_sql) if command == "plan" else classify(names_of_files(rest) if files else rest, after, with_sql)
    status = 0
    for line in found:
        status = 1 if "error" in line else status
        print(json.dumps(line), flush=True)
    return status


if __name__ in ("__main__", "__django_deploy__"):
    code = main(sys.argv[1:])
    if code:
        sys.exit(code)

# Runs several manage.py commands in ONE interpreter (Django is set up once, not once per command), printing
# `<mark> <name> <exit code>` after each and stopping at the first that fails. A command with code runs that code
# instead of manage.py, with its args as sys.argv[1:], in the Django the commands before it set up.
# Arguments: mark, the hint printed after a failed write, the commands as JSON ([name, args, code or null], ...).
import json
import runpy
import sys
import traceback

mark, read_only_hint, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for name, args, code in commands:
    sys.argv = ['manage.py', *args]
    status = 0
    try:
        if code is None:
            runpy.run_path('manage.py', run_name='__main__')
        else:
            # Code run first in its process (a fleet's health check after the primary host migrated) sets Django
            # up the way manage.py does, quietly.
            from django.apps import apps
            if not apps.ready:
                import contextlib, os
                with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
                    sys.argv = ["manage.py", "version"]
                    try:
                        runpy.run_path("manage.py", run_name="__main__")
                    except SystemExit:
                        pass
                sys.argv = ["manage.py", *args]
            exec(compile(code, name, 'exec'), {'__name__': '__django_deploy__'})
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        traceback.print_exc()
        status = 1
        if isinstance(e, PermissionError) or "readonly database" in str(e):
            print(read_only_hint, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    print(f'{mark} {name} {status}', flush=True)
    if status:
        sys.exit(status)

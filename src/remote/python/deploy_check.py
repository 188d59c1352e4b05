# Django's deployment checks (`check --deploy`) with the server's settings, run in the preflight's Django: each
# warning becomes a warning line. Errors always fail, as `check --deploy` does; warnings fail with `fail`, and the
# serious ones with `warn` too. Silenced checks stay silent.
# Arguments: warning marker, the serious check ids (comma-separated), warn | fail.
import sys

from django.core import checks

warn, serious_ids, fail_on_warnings = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3] == "fail"
found = [m for m in checks.run_checks(include_deployment_checks=True)
         if m.level >= checks.WARNING and not m.is_silenced()]
for m in found:
    text = " ".join(str(m).split())
    print(f"{warn} check --deploy: {text}", flush=True)
errors = [m for m in found if m.level >= checks.ERROR]
serious = [m for m in found if m.id in serious_ids]
print(f"check --deploy with the server settings: {len(found)} issue(s), {len(errors)} error(s)")
for m in serious:
    print(f"check --deploy: {m.id} refuses the release under deploy-check warn and fail (only off skips it): {m.msg}", file=sys.stderr)
if errors or serious or (fail_on_warnings and found):
    why = "errors" if errors else "a serious warning" if serious else "warnings, and deploy-check is fail"
    print(f"check --deploy found {why}: this release does not go live", file=sys.stderr)
    sys.exit(1)

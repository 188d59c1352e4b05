# Keeps static files reachable after their release stops being live: the files of a release's STATIC_ROOT are
# hard-linked (copied across file systems) into the shared static directory, each by an atomic rename. Arguments:
# warning marker, the name of the file in a release that records its STATIC_ROOT, then one of
# - SHARED, run by manage_many.py in the release's Django after collectstatic: records STATIC_ROOT and links the
#   files whose names are not there yet, so a failed deploy leaves only extra names behind;
# - `live SHARED`, in the release just made live: its files replace those of the same name;
# - `prune SHARED RELEASE...`: removes every file no kept release has under the same name, then empty folders.
import os
import shutil
import sys

warn, RECORD = sys.argv[1], sys.argv[2]
args = sys.argv[3:]


def files(root):
    for d, _, names in os.walk(root):
        for n in names:
            yield os.path.relpath(os.path.join(d, n), root)


# The shared folder belongs to the action once it holds this mark: one someone else filled is never touched.
MARK = ".django-deploy"


def ours(shared):
    if os.path.isfile(os.path.join(shared, MARK)):
        return True
    if os.path.isdir(shared) and os.listdir(shared):
        print(f"{warn} {shared} holds files this action did not put there: static files of old releases are not kept there (move it away to have them kept)", flush=True)
        return False
    os.makedirs(shared, exist_ok=True)
    open(os.path.join(shared, MARK), "w").close()
    return True


def link(root, shared, replace):
    if not ours(shared):
        return 0
    count = 0
    for rel in files(root):
        src, dst = os.path.join(root, rel), os.path.join(shared, rel)
        if os.path.lexists(dst) and (not replace or os.path.samefile(src, dst)):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst + ".django-deploy-tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        count += 1
    return count


def recorded(release):
    try:
        with open(os.path.join(release, RECORD)) as f:
            return os.path.join(release, f.read().strip())
    except FileNotFoundError:
        return None


def collected():
    from django.conf import settings
    shared, here = args[0], os.path.realpath(".")
    if not settings.STATIC_ROOT:
        print("STATIC_ROOT is not set: no static files to keep")
        return
    root = os.path.realpath(str(settings.STATIC_ROOT))
    if not root.startswith(here + os.sep):
        print(f"STATIC_ROOT {root} is outside the release: its files outlive the release already")
        return
    if not os.path.isdir(root):
        print(f"STATIC_ROOT {root} does not exist (no collectstatic?): no static files to keep")
        return
    with open(RECORD, "w") as f:
        f.write(os.path.relpath(root, here))
    n = link(root, shared, False)
    print(f"{n} static file(s) new to {shared} linked there from {root}")


def prune(shared, releases):
    if not os.path.isfile(os.path.join(shared, MARK)):
        return
    roots = [r for r in map(recorded, releases) if r]
    gone = 0
    for rel in list(files(shared)):
        if rel != MARK and not any(os.path.isfile(os.path.join(r, rel)) for r in roots):
            os.unlink(os.path.join(shared, rel))
            gone += 1
    for d, subdirs, names in os.walk(shared, topdown=False):
        if d != shared and not os.listdir(d):
            os.rmdir(d)
    print(f"{gone} static file(s) no kept release has removed from {shared}")


if __name__ == "__django_deploy__":
    collected()
elif args[0] == "live":
    root = recorded(".")
    n = link(root, args[1], True) if root else 0
    print(f"{n} static file(s) of the live release linked into {args[1]}")
elif args[0] == "prune":
    prune(args[1], args[2:])

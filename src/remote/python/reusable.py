# Which files of a new release the host has unchanged in its live release. The new release's manifest (gzip) comes
# on stdin; a record with the same mode, hash and path whose live file still is what was deployed (content hashed as
# git hashes a blob, the executable bit, a symlink's target) can be reused. Keeps the new manifest and the reusable
# paths (NUL-separated) for the upload step and prints `reuse=<index ranges>` of the reusable records. Live files
# changed on the server since are named in a warning (they are sent again). Changes nothing live.
# Arguments: warning marker, manifest file name, live release dir, file for the new manifest, file for the paths.
import hashlib
import os
import sys
import zlib

warn, manifest = sys.argv[1], os.fsencode(sys.argv[2])
live, keep_manifest, keep_reuse = (os.fsencode(a) for a in sys.argv[3:6])
new = zlib.decompress(sys.stdin.buffer.read(), 31)
try:
    old = open(os.path.join(live, manifest), "rb").read()
except FileNotFoundError:
    old = b""
have = {}
for record in old.split(b"\0"):
    head, sep, path = record.partition(b"\t")
    if sep: have[path] = head
reuse, indexes, changed = [], [], []
for i, record in enumerate(r for r in new.split(b"\0") if r):
    head, sep, path = record.partition(b"\t")
    if not sep or have.get(path) != head or b"\xef\xbf\xbd" in path: continue
    mode, kind, sha = head.split(b" ")
    if kind != b"blob": continue
    full = os.path.join(live, path)
    try:
        if mode == b"120000":
            data = os.readlink(full) if os.path.islink(full) else None
        elif os.path.islink(full) or not os.path.isfile(full) or (os.stat(full).st_mode & 0o100 != 0) != (mode == b"100755"):
            data = None
        else:
            data = open(full, "rb").read()
    except OSError:
        data = None
    h = None if data is None else hashlib.new("sha1" if len(sha) == 40 else "sha256", b"blob %d\0" % len(data) + data).hexdigest().encode()
    if h == sha:
        reuse.append(path)
        indexes.append(i)
    else:
        changed.append(path.decode("utf-8", "replace"))


def keep(name, data):
    with open(name + b".tmp", "wb") as f: f.write(data)
    os.replace(name + b".tmp", name)


keep(keep_manifest, new)
keep(keep_reuse, b"".join(p + b"\0" for p in reuse))
if changed:
    print(f"{warn} {len(changed)} file(s) of the live release differ from what was deployed (changed on the server?), sent again: " + ", ".join(changed[:5]) + (" …" if len(changed) > 5 else ""), flush=True)
ranges, start = [], None
for n, i in enumerate(indexes):
    if start is None: start = i
    if n + 1 == len(indexes) or indexes[n + 1] != i + 1:
        ranges.append(str(start) if start == i else f"{start}-{i}")
        start = None
print("reuse=" + ",".join(ranges))

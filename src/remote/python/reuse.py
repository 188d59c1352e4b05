# Links the paths listed (NUL-separated) in a file from the live release into the new one: a hard link (a copy where
# the file system refuses one), a symlink made anew. A hard link is the live file itself: release files are read-only
# (see unpack), so a step that writes one in place fails (EACCES) instead of changing what is live; root ignores
# modes, so as root the files are copied. Arguments: new release dir, live release dir, the list.
import os
import shutil
import sys

new, live, listing = (os.fsencode(a) for a in sys.argv[1:4])
paths = [p for p in open(listing, "rb").read().split(b"\0") if p]
root = os.geteuid() == 0
for p in paths:
    src, dst = os.path.join(live, p), os.path.join(new, p)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    else:
        try:
            if root: raise OSError("root ignores read-only modes: a copy")
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
os.remove(listing)
print(f"{len(paths)} unchanged file(s) taken from the live release")

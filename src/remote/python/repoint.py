# Rewrites a copied virtualenv's own path in its bin/ scripts (shebangs, activate) and pyvenv.cfg. Each file is
# written anew and renamed over the old name (the copy is made of hard links to the live virtualenv's files). Only
# text files; links (bin/python) are left as they are. Arguments: donor, target.
import os
import re
import sys

donor, target = sys.argv[1].encode(), sys.argv[2].encode()
pattern = re.compile(re.escape(donor) + rb'(?![\w.-])')
bindir = os.path.join(sys.argv[2], 'bin')
for p in [os.path.join(bindir, n) for n in os.listdir(bindir)] + [os.path.join(sys.argv[2], 'pyvenv.cfg')]:
    if os.path.islink(p) or not os.path.isfile(p):
        continue
    with open(p, 'rb') as f:
        data = f.read()
    if donor not in data or b'\0' in data[:4096]:
        continue
    mode = os.stat(p).st_mode
    tmp = p + '.django-deploy-tmp'
    with open(tmp, 'wb') as f:
        f.write(pattern.sub(target, data))
    os.chmod(tmp, mode)
    os.replace(tmp, p)

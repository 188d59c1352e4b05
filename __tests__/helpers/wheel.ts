/** Builds a tiny pure-Python wheel with the system Python's zipfile: a local dependency with no index. */
import { execFileSync } from 'node:child_process'

export function buildWheel(dir: string, name: string, version: string, module: string): string {
  const file = `${name}-${version}-py3-none-any.whl`
  const py = `
import base64, hashlib, sys, zipfile
d, name, version, module, file = sys.argv[1:6]
files = {
  f'{name}/__init__.py': module,
  f'{name}-{version}.dist-info/METADATA': f'Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n',
  f'{name}-{version}.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n',
}
record = ''.join(f'{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).rstrip(b"=").decode()},{len(c.encode())}\\n' for p, c in files.items())
files[f'{name}-{version}.dist-info/RECORD'] = record + f'{name}-{version}.dist-info/RECORD,,\\n'
with zipfile.ZipFile(f'{d}/{file}', 'w') as z:
    for p, c in files.items():
        z.writestr(p, c)
`
  execFileSync('/usr/bin/python3', ['-c', py, dir, name, version, module, file])
  return file
}

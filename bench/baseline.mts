/**
 * The hand-written baseline the benchmarks compare the action with: a workflow `run:` step as people write it
 * today. Shared by bench/deploy.mts and bench/venv.mts.
 */
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { shq, type Target } from '../sandbox/target.js'

// The baseline: a workflow `run:` step as people write it today (key and known_hosts written to files,
// strict host key checking, one tar stream into the live directory, one ssh with the remote script).

export function baselineScript(t: Target, app: string, repoDir: string, gunicornLog: string): string {
  const remote = `set -euo pipefail
cd ${shq(app)}
test -x .venv/bin/python || /usr/bin/python3 -m venv --system-site-packages .venv
.venv/bin/pip install -q --disable-pip-version-check --no-index -r requirements.txt
.venv/bin/python manage.py migrate --noinput
.venv/bin/python manage.py collectstatic --noinput
# restart: what \`systemctl restart gunicorn\` does (stop, wait for the old master to exit, start, and with
# Type=notify as in gunicorn's docs, return once it is ready); no systemd here, so by hand.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
if pid=$(cat ${shq(t.gunicornPidfile)} 2>/dev/null) && alive "$pid"; then
  kill -TERM "$pid"
  for _ in $(seq 300); do alive "$pid" || break; sleep 0.05; done
fi
setsid nohup bash -c ${shq(t.gunicornCommand)} >> ${shq(gunicornLog)} 2>&1 < /dev/null &
for _ in $(seq 600); do
  curl -fsS -o /dev/null --max-time 1 http://${t.host}:${t.gunicornPort}/health/ 2>/dev/null && exit 0
  sleep 0.05
done
echo "gunicorn did not come up" >&2
exit 1
`
  return `set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(umask 077 && printf '%s\\n' "$SSH_KEY" > "$tmp/key" && printf '%s\\n' "$KNOWN_HOSTS" > "$tmp/known_hosts")
ssh_=(ssh -i "$tmp/key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes
  -o UserKnownHostsFile="$tmp/known_hosts" -p ${t.sshPort} ${t.user}@${t.host})
git -C ${shq(repoDir)} archive --format=tar.gz HEAD | "\${ssh_[@]}" ${shq(`mkdir -p ${shq(app)} && tar -xzf - -C ${shq(app)}`)}
"\${ssh_[@]}" 'bash -s' <<'REMOTE'
${remote}REMOTE
`
}

export async function runBaseline(
  t: Target,
  app: string,
  repoDir: string,
  gunicornLog: string,
  scriptDir: string
): Promise<{ code: number; wallMs: number; log: string }> {
  const file = path.join(scriptDir, 'baseline.sh')
  writeFileSync(file, baselineScript(t, app, repoDir, gunicornLog), { mode: 0o600 })
  const start = performance.now()
  const child = spawn('/bin/bash', [file], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      LANG: 'C.UTF-8',
      SSH_KEY: t.privateKey,
      KNOWN_HOSTS: t.knownHosts
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let log = ''
  child.stdout.on('data', (b: Buffer) => (log += b.toString()))
  child.stderr.on('data', (b: Buffer) => (log += b.toString()))
  const timer = setTimeout(() => child.kill('SIGKILL'), 180_000)
  const code = await new Promise<number>(r => child.on('close', (c, sig) => r(c ?? (sig ? 137 : 1))))
  const wallMs = performance.now() - start
  clearTimeout(timer)
  return { code, wallMs, log }
}

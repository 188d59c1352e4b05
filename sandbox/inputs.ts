/**
 * The action's inputs for deploying to a sandbox target: one home for the tests, the demo and the benchmark.
 */
import { shq, type Target } from './target.js'

/** Connection, paths and the server's Python (Debian's Django and Gunicorn seen through the virtualenv). */
export function deployInputs(t: Target, extra: Record<string, string> = {}): Record<string, string> {
  return {
    hosts: `127.0.0.1:${t.sshPort}`,
    user: t.user,
    'ssh-key': t.privateKey,
    'known-hosts': t.knownHosts,
    'deploy-path': t.deployPath,
    'remote-python': '/usr/bin/python3',
    'venv-options': '--system-site-packages',
    'pip-args': '--no-index',
    python: '/usr/bin/python3',
    'github-token': '',
    ...extra
  }
}

/**
 * As `deployInputs`, for hosts that `deploy.yml` lists (its `hosts:` entries give address, user and path): the
 * first host's key (a fleet's hosts accept it, sandbox/fleet.ts) and every host's known_hosts line.
 */
export function fleetInputs(hosts: Target[], extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...deployInputs(hosts[0], extra),
    hosts: '',
    user: '',
    'deploy-path': '',
    'known-hosts': hosts.map(x => x.knownHosts).join('\n')
  }
}

/** As `deployInputs`, plus the graceful Gunicorn reload, nginx test/reload and the health check. */
export function liveInputs(t: Target, extra: Record<string, string> = {}): Record<string, string> {
  return deployInputs(t, {
    'gunicorn-pidfile': t.gunicornPidfile,
    'nginx-test-command': t.nginxTestCommand,
    'nginx-reload-command': t.nginxReloadCommand,
    'health-check-url': `${t.url}/health/`,
    ...extra
  })
}

/**
 * Writes the server's own settings to `<deploy-path>/shared/.env`, as a user does before the first deploy: the
 * database (by default in shared/, outside every release) and the allowed hosts, then any extra lines.
 */
export async function writeServerEnv(
  t: Target,
  o: { database?: string; allowedHosts?: string; extra?: string } = {}
): Promise<void> {
  const text =
    `DATABASE_PATH=${o.database ?? `${t.deployPath}/shared/db.sqlite3`}\n` +
    `ALLOWED_HOSTS=${o.allowedHosts ?? '127.0.0.1,localhost'}\n${o.extra ?? ''}`
  const shared = shq(`${t.deployPath}/shared`)
  const w = await t.run(`mkdir -p ${shared} && cat > ${shared}/.env`, { input: text })
  if (w.code !== 0) throw new Error(`writing ${t.deployPath}/shared/.env: ${w.stderr}`)
}

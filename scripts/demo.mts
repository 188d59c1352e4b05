/**
 * The main job, on this machine, as root: a bare Debian server (systemd in a container on 127.253.1.2,
 * sandbox/container.ts) and pebble standing in for Let's Encrypt (sandbox/acme.ts); then the built action
 * (dist/index.js) runs `mode: setup` (packages, deploy user, units, nginx site, a certificate over HTTP-01,
 * shared/.env with a generated SECRET_KEY), the first deploy of example/ (which starts the units), and a second
 * deploy whose VERSION the page shows. It prints the https URL, a curl line that verifies the certificate, how to
 * trust the demo CA, and the time of each phase. Ctrl-C stops and removes everything it started (container,
 * pebble, files), by PID; `--exit` does so right after printing (for scripts).
 */
import { execFileSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startAcme, type Acme } from '../sandbox/acme.js'
import { startContainer, type Container } from '../sandbox/container.js'
import { node24, ROOT, Repo, runAction, type ActionRun } from '../__tests__/helpers/action.js'
import { readAsRunner } from '../__tests__/helpers/runner-log.js'

const NET = 253
const APP = 'mysite'
const DOMAIN = 'mysite.dddemo.test'
const DEPLOY_PATH = `/srv/${APP}`
const exitAtOnce = process.argv.includes('--exit')
/** The server's SECRET_KEY, made here, sent only in `env-file` (a secret: masked line by line, never printed). */
const SECRET_KEY = randomBytes(40).toString('base64url')

const dir = mkdtempSync(join(tmpdir(), 'dd-demo-'))
const caFile = join(dir, 'demo-ca.pem')
const started: { c?: Container; acme?: Acme; repo?: Repo; action?: ChildProcess } = {}
const times: Array<[string, number]> = []
let runs = 0
let inFlight: Promise<unknown> = Promise.resolve()
let stopping: Promise<void> | undefined
/** Waits for ever, keeping the process alive (a bare pending promise would let Node exit, leaving all behind). */
const forever = (): Promise<never> => new Promise(() => setInterval(() => undefined, 3_600_000))

/** Stops what was started, last first; a phase still starting (a container booting) is waited for first. */
function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    console.log('\nstopping the demo: the action, pebble, the container (its poweroff), files…')
    started.action?.kill('SIGTERM')
    await inFlight.catch(() => undefined)
    const t0 = Date.now()
    for (const [what, f] of [
      ['pebble', () => started.acme?.stop()],
      ['container', () => started.c?.stop()],
      ['files', () => (started.repo?.remove(), rmSync(dir, { recursive: true, force: true }))]
    ] as const)
      await Promise.resolve(f()).catch((e: Error) => console.error(`stopping ${what}: ${e.message}`))
    console.log(`stopped and removed in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
    process.exit(code)
  })()
  return stopping
}
process.on('SIGINT', () => void stop(130))
process.on('SIGTERM', () => void stop(143))

/** Runs one phase, timed; once stopping, it never returns (stop() exits). */
async function phase<T>(title: string, f: () => Promise<T>): Promise<T> {
  console.log(`\n== ${title}`)
  const t0 = Date.now()
  const p = f()
  inFlight = p
  const v = await p
  times.push([title, (Date.now() - t0) / 1000])
  if (stopping) await forever()
  return v
}

/**
 * What a GitHub log shows of a run, folded: the lines outside groups as they are, warnings and errors included;
 * the titles of the groups between them on one wrapped line per host (`▸ host: connect · lock · …`).
 */
function show(r: ActionRun): void {
  const out: string[] = []
  let titles: string[] = []
  const flush = (): void => {
    const host = /^([^:\s]+): /.exec(titles[0] ?? '')?.[1]
    const same = host !== undefined && titles.every(t => t.startsWith(`${host}: `))
    const items = same ? titles.map(t => t.slice(host.length + 2)) : titles
    let line = `  ▸ ${same ? `${host}: ` : ''}`
    for (const [i, t] of items.entries()) {
      const piece = `${i ? ' · ' : ''}${t}`
      if (line.length + piece.length <= 116) line += piece
      else {
        out.push(line)
        line = `      ${t}`
      }
    }
    if (items.length) out.push(line)
    titles = []
  }
  let depth = 0
  for (const line of readAsRunner(r.log.replace(/^::(group|endgroup)::/gm, '@@$1@@')).visible.split('\n')) {
    if (line.startsWith('@@group@@')) {
      if (depth++ === 0) titles.push(line.slice(9))
    } else if (line.startsWith('@@endgroup@@')) depth = Math.max(0, depth - 1)
    else if (depth === 0 && line.trim()) {
      flush()
      out.push(`    ${line}`)
    }
  }
  flush()
  console.log(out.join('\n'))
  if (r.code !== 0 && !stopping) {
    console.error(`the action exited ${r.code}; its whole log:\n${readAsRunner(r.log).visible}`)
    void stop(1)
  }
}

/** The inputs every run shares: the container's address and pinned host key, the deploy user and its key. */
function common(deployKey: string): Record<string, string> {
  return {
    hosts: started.c!.host,
    'known-hosts': started.c!.knownHosts,
    user: 'deploy',
    'ssh-key': deployKey,
    'deploy-path': DEPLOY_PATH,
    'github-token': ''
  }
}

function setupInputs(deployKey: string): Record<string, string> {
  const env = [
    `SECRET_KEY=${SECRET_KEY}`,
    'DEBUG=0',
    `ALLOWED_HOSTS=${DOMAIN}`,
    'DJANGO_SECURE=1',
    `DATABASE_PATH=${DEPLOY_PATH}/shared/db.sqlite3`
  ].join('\n')
  return {
    ...common(deployKey),
    mode: 'setup',
    'setup-ssh-key': started.c!.privateKey,
    app: APP,
    domains: DOMAIN,
    'acme-directory': started.acme!.directory,
    'acme-ca-certificate': started.acme!.caPem,
    'acme-email': `admin@${DOMAIN}`,
    'env-file': env
  }
}

function deployInputs(deployKey: string): Record<string, string> {
  return {
    ...common(deployKey),
    mode: 'deploy',
    python: '/usr/bin/python3',
    checks: 'check, migrations, test',
    'remote-python': '/usr/bin/python3',
    'venv-options': '--system-site-packages',
    'gunicorn-service': APP,
    nginx: 'true'
  }
}

/** Node 24, the runtime GitHub runs the action on (from the npm registry, cached); else this one. */
function nodeForAction(): string | undefined {
  try {
    return node24()
  } catch {
    console.log('  (Node 24 not available from the npm registry: the action runs on this Node)')
    return undefined
  }
}

/**
 * Runs the built action as a GitHub job would, on the demo's repository (the process is kept, to stop it), and
 * keeps the job summary GitHub would show as `<n>-<name>.md` in the demo's directory.
 */
async function action(
  name: string,
  inputs: Record<string, string>,
  env: Record<string, string>
): Promise<ActionRun> {
  const r = await runAction(inputs, {
    workspace: started.repo!.dir,
    env,
    node: nodeForAction(),
    watch: (_, child) => (started.action = child)
  })
  writeFileSync(join(dir, `${++runs}-${name}.md`), r.summary)
  return r
}

/** The curl line printed for the user, run here first: it must verify pebble's certificate. */
function curl(path = '/'): { line: string; body: string } {
  const args = ['-sS', '--cacert', caFile, '--resolve', `${DOMAIN}:443:${started.c!.host}`]
  const url = `https://${DOMAIN}${path}`
  return {
    line: `curl ${args.slice(1).join(' ')} ${url}`,
    body: execFileSync('curl', [...args, url]).toString()
  }
}

async function main(): Promise<void> {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'deploy'), '-C', 'dd-demo'])
  const deployKey = readFileSync(join(dir, 'deploy'), 'utf8')
  started.repo = new Repo(join(ROOT, 'example')) // example/ as it is in this working tree, committed as v1
  await phase(`a bare Debian server: systemd in a container, net ${NET}`, async () => {
    started.c = await startContainer({ name: 'dddemo', net: NET })
    console.log(`  root@${started.c.host}:22, host key ${started.c.fingerprint}`)
  })
  await phase("pebble, a test ACME server standing in for Let's Encrypt", async () => {
    started.acme = await startAcme({ bindIp: started.c!.outside, domains: { [DOMAIN]: started.c!.host } })
    console.log(`  ${started.acme.directory}, ${DOMAIN} → ${started.c!.host}`)
  })
  const setup = (): Promise<ActionRun> =>
    action('setup', setupInputs(deployKey), { GITHUB_EVENT_NAME: 'workflow_dispatch' })
  await phase('mode: setup (as root, tls: acme through pebble)', async () => {
    const r = await setup()
    show(r)
    console.log(`  site-url: ${r.outputs['site-url']}`)
  })
  await phase('first deploy of example/ (v1, gunicorn-service starts the units)', async () =>
    show(await action('deploy-v1', deployInputs(deployKey), { GITHUB_REF: 'refs/tags/v1' }))
  )
  const version = `v2, deployed ${new Date().toISOString().slice(0, 19).replace('T', ' ')} UTC`
  started.repo.write('VERSION', `${version}\n`).commit('v2')
  await phase('second deploy (v2: VERSION changed; graceful reload)', async () =>
    show(await action('deploy-v2', deployInputs(deployKey), { GITHUB_REF: 'refs/tags/v2' }))
  )
  await phase('mode: setup again (the same inputs: no changes)', async () => show(await setup()))
  writeFileSync(caFile, await started.acme!.issuingRoot())
  const home = curl()
  const shown = /<span id="version">([^<]*)<\/span>/.exec(home.body)?.[1]
  if (shown !== version) throw new Error(`the page shows version ${shown}, not ${version}`)
  report(home.line, shown)
}

function report(curlLine: string, version: string): void {
  const c = started.c!
  console.log(`
The example project is live over HTTPS, with a certificate pebble issued to mode setup:

  https://${DOMAIN}/   (the container at ${c.host}; reachable from this machine only)
  ${curlLine}
    → the page shows "Version: ${version}"

In a browser on this machine: add the line "${c.host} ${DOMAIN}" to /etc/hosts and import
${caFile} as a certificate authority (Firefox: Settings › Privacy & Security › Certificates ›
View Certificates › Authorities › Import; Chromium: Settings › Privacy and security › Security › Manage
certificates › Authorities). The demo CA is made anew by pebble on every run and removed with the demo.
The job summaries GitHub would show, one per run: ${dir}/*.md
As root on the server: nsenter -t ${c.pid} -a bash   (deploy path ${DEPLOY_PATH}, units ${APP}.socket/.service)

Time of each phase:`)
  for (const [title, s] of times) console.log(`  ${s.toFixed(1).padStart(6)} s  ${title}`)
}

try {
  await main()
  if (exitAtOnce) await stop(0)
  console.log('\nCtrl-C stops the demo and removes everything it started.')
  await forever()
} catch (e) {
  console.error(e)
  await stop(1)
}

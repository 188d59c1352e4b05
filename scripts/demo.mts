/**
 * The main job, on this machine: starts a sandbox server (OpenSSH, nginx, a deploy user) on loopback, deploys
 * the example Django project in this repository to it with the built action (dist/index.js), starts Gunicorn,
 * deploys a second release with a graceful reload, and prints the URL to open. Ctrl-C stops and removes
 * everything it started. `--exit` stops right after printing (for scripts).
 */
import { randomBytes } from 'node:crypto'
import { deployInputs, liveInputs } from '../sandbox/inputs.js'
import { startTarget } from '../sandbox/target.js'
import { ROOT, runAction, type ActionRun } from '../__tests__/helpers/action.js'

const exitAtOnce = process.argv.includes('--exit')
const t = await startTarget({ name: 'dddemo' })
let stopping = false
const stop = async (code: number): Promise<never> => {
  if (!stopping) {
    stopping = true
    console.log('\nstopping the sandbox (sshd, nginx, gunicorn, deploy user, files)…')
    await t.stop()
  }
  process.exit(code)
}
process.on('SIGINT', () => void stop(0))
process.on('SIGTERM', () => void stop(0))

function show(title: string, r: ActionRun): void {
  console.log(`\n===== ${title}: exit ${r.code}`)
  console.log(
    r.log
      .split('\n')
      .filter(l => !l.startsWith('::add-mask::') && !l.startsWith('::set-output'))
      .join('\n')
  )
  console.log('outputs:', JSON.stringify(r.outputs))
  if (r.code !== 0) void stop(1)
}

try {
  console.log(`sandbox server: ssh ${t.user}@127.0.0.1 -p ${t.sshPort}, deploy path ${t.deployPath}`)
  // What a user puts on the server once, before the first deploy.
  const env = [
    `SECRET_KEY=${randomBytes(32).toString('hex')}`,
    'DEBUG=0',
    'ALLOWED_HOSTS=127.0.0.1,localhost',
    `DATABASE_PATH=${t.deployPath}/shared/db.sqlite3`
  ].join('\n')
  await t.run(`mkdir -p ${t.deployPath}/shared && cat > ${t.deployPath}/shared/.env`, { input: env + '\n' })

  const inputs = deployInputs(t, {
    mode: 'deploy',
    'working-directory': 'example',
    checks: 'check, migrations, test',
    'pip-args': ''
  })
  const stamp = new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)
  show(
    'first deploy (empty server, no reload input)',
    await runAction({ ...inputs, 'release-name': `demo-${stamp}-1` }, { workspace: ROOT })
  )

  // Once the first release is there, Gunicorn is started the way the README shows.
  await t.startGunicorn()
  console.log(`\ngunicorn started: ${t.gunicornCommand}`)

  show(
    'second deploy (graceful reload, nginx, health check)',
    await runAction(liveInputs(t, { ...inputs, 'release-name': `demo-${stamp}-2` }), { workspace: ROOT })
  )
  const page = await (await fetch(`${t.url}/`)).text()
  console.log(
    `\nThe example project is live: open ${t.url}/  (${t.url}/health/, ${t.url}/static/pages/site.css)`
  )
  console.log(`home page says: ${/<h1>([^<]*)<\/h1>/.exec(page)?.[1] ?? page.slice(0, 80)}`)
  if (exitAtOnce) await stop(0)
  console.log('Ctrl-C stops the sandbox and removes everything it started.')
  await new Promise(() => undefined)
} catch (e) {
  console.error(e)
  await stop(1)
}

import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse } from 'yaml'
import {
  defaultReleaseName,
  INPUTS,
  isSafeReleaseName,
  loadSettings,
  parseHost,
  resolveMode,
  SettingsError,
  type InputName
} from '../../src/settings.js'
import type { InputSpec } from '../../src/settings/sources.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-settings-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function keypair(passphrase = ''): { priv: string; pub: string } {
  const file = join(dir, `k${Math.random().toString(36).slice(2)}`)
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-f', file, '-C', 't'])
  return { priv: readFileSync(file, 'utf8'), pub: readFileSync(`${file}.pub`, 'utf8') }
}
const key = keypair()
const FP = 'SHA256:' + 'A'.repeat(43)

const deployInputs: Partial<Record<InputName, string>> = {
  mode: 'deploy',
  hosts: 'web1.example.com',
  user: 'deploy',
  'ssh-key': key.priv,
  'host-fingerprint': FP,
  'deploy-path': '/srv/app'
}

function load(inputs: Partial<Record<InputName, string>>, env: Record<string, string> = {}) {
  return loadSettings({
    input: n => inputs[n] ?? '',
    env: {
      GITHUB_WORKSPACE: dir,
      GITHUB_EVENT_NAME: 'push',
      GITHUB_REF: 'refs/tags/v1.0.0',
      GITHUB_SHA: 'abcdef1234567',
      ...env
    }
  })
}

function problems(inputs: Partial<Record<InputName, string>>, env: Record<string, string> = {}): string[] {
  try {
    load(inputs, env)
  } catch (e) {
    if (e instanceof SettingsError) return e.problems.map(p => `${p.where}: ${p.message}`)
    throw e
  }
  throw new Error('expected a SettingsError')
}

describe('action.yml', () => {
  const action = parse(readFileSync('action.yml', 'utf8')) as {
    inputs: Record<string, { description: string; default?: string }>
    outputs: Record<string, unknown>
    runs: { using: string; main: string }
  }
  it('declares exactly the inputs the settings read, each described', () => {
    expect(Object.keys(action.inputs).sort()).toEqual(Object.keys(INPUTS).sort())
    for (const [name, input] of Object.entries(action.inputs))
      expect(`${name}: ${input.description}`.length).toBeGreaterThan(name.length + 20)
  })
  it('has a description the Marketplace accepts (under 125 characters) that says one or more hosts', () => {
    const description = (parse(readFileSync('action.yml', 'utf8')) as { description: string }).description
    expect(description.length).toBeLessThan(125)
    expect(description).toContain('one or more hosts')
  })
  it('declares the outputs users build on and runs on node24', () => {
    expect(Object.keys(action.outputs).sort()).toEqual(
      ['checks', 'deployed', 'mode', 'previous-release', 'release', 'rolled-back', 'site-url'].sort()
    )
    expect(action.runs).toEqual({ using: 'node24', main: 'dist/index.js' })
  })
  it('describes what the schema of each simple input accepts: every choice; defaults the schema can read', () => {
    for (const [name, spec] of Object.entries(INPUTS) as [string, InputSpec][]) {
      const text = action.inputs[name].description
      if (spec.kind === 'choice')
        for (const c of spec.choices) expect([name, text]).toEqual([name, expect.stringContaining(c)])
      if (spec.kind === 'bool')
        expect([name, spec.default]).toEqual([name, expect.stringMatching(/^(true|false)$/)])
      if (spec.kind === 'int') {
        expect([name, Number.isInteger(Number(spec.default))]).toEqual([name, true])
        expect([name, Number(spec.default) >= spec.min]).toEqual([name, true])
      }
    }
  })
  it('states every non-empty default in the description', () => {
    for (const [name, spec] of Object.entries(INPUTS)) {
      if (!spec.default || name === 'checks') continue
      expect([name, action.inputs[name].description]).toEqual([name, expect.stringContaining(spec.default)])
    }
  })
})

describe('mode', () => {
  it.each([
    ['pull_request', 'refs/pull/3/merge', 'check'],
    ['pull_request_target', 'refs/heads/main', 'check'],
    ['push', 'refs/tags/v1.2.0', 'deploy'],
    ['push', 'refs/heads/main', 'check'],
    // a manual run deploys only with mode: deploy (docs/example-deploy.yml passes it from a choice input)
    ['workflow_dispatch', 'refs/heads/main', 'check'],
    ['workflow_dispatch', 'refs/tags/v1.2.0', 'check'],
    ['schedule', 'refs/heads/main', 'check']
  ])('auto on %s %s is %s', (eventName, ref, mode) => {
    expect(resolveMode('auto', { eventName, ref })).toBe(mode)
  })
  it('refuses deploy on a pull request event', () => {
    const p = problems(
      { ...deployInputs },
      { GITHUB_EVENT_NAME: 'pull_request', GITHUB_REF: 'refs/pull/7/merge' }
    )
    expect(p).toEqual([
      expect.stringMatching(/^input 'mode': mode deploy is refused on a pull_request event/)
    ])
  })
  it('rejects an unknown mode with a suggestion', () => {
    expect(problems({ mode: 'deplyo' })).toEqual([
      expect.stringContaining(`unknown mode "deplyo" (did you mean 'deploy'?)`)
    ])
  })
})

describe('settings', () => {
  it('reads a full deploy with defaults', () => {
    const s = load(deployInputs)
    expect(s.mode).toBe('deploy')
    expect(s.ssh.hosts).toEqual([{ host: 'web1.example.com', port: 22 }])
    expect(s.deploy).toMatchObject({
      path: '/srv/app',
      sharedPaths: ['.env', 'media'],
      migrate: true,
      collectstatic: true,
      nginx: false,
      keepReleases: 5,
      lockTimeout: 300,
      healthCheckTimeout: 30,
      deployCheck: 'warn',
      releaseName: 'v1.0.0'
    })
    // check --deploy runs on the server with its settings (deploy-check), not on the runner with CI's
    expect(s.checks).toEqual(['check', 'migrations', 'test'])
    expect(load({ ...deployInputs, 'deploy-check': 'FAIL' }).deploy.deployCheck).toBe('fail')
  })
  it('check mode needs no server inputs', () => {
    const s = load({}, { GITHUB_REF: 'refs/heads/main' })
    expect(s.mode).toBe('check')
  })
  it('parses hosts with ports, commas and new lines', () => {
    const s = load({
      ...deployInputs,
      hosts: 'a.example.com:2222, 10.0.0.5\n[::1]:2200',
      port: '2022',
      'host-fingerprint': '',
      'known-hosts': `* ${key.pub.trim()}`
    })
    expect(s.ssh.hosts).toEqual([
      { host: 'a.example.com', port: 2222 },
      { host: '10.0.0.5', port: 2022 },
      { host: '::1', port: 2200 }
    ])
  })
  it.each([
    ['hosts', '', /input 'hosts': is empty/],
    ['hosts', 'web1;id', /"web1;id" is not a valid host/],
    ['hosts', 'web1:99999', /port 99999 is out of range; expected 1–65535/],
    ['port', '0', /input 'port': port 0 is out of range/],
    ['port', 'ssh', /input 'port': port "ssh" is not a whole number/],
    ['keep-releases', '-1', /input 'keep-releases': -1 is negative; expected a count ≥ 1/],
    ['lock-timeout', 'soon', /input 'lock-timeout': "soon" is not a whole number/],
    ['deploy-path', 'srv/app', /input 'deploy-path': "srv\/app" is relative; expected an absolute path/],
    ['deploy-path', '/srv/../etc', /contains \. or \.\./],
    ['shared-paths', '.env, ../x', /"\.\.\/x" must be a plain path inside the release/],
    ['checks', 'check, tests', /unknown check "tests" \(did you mean 'test'\?\)/],
    [
      'migrate',
      'maybe',
      /input 'migrate': "maybe" is not a migrate mode; expected true .*, every-host .* or false/
    ],
    ['max-parallel', '0', /input 'max-parallel'/],
    [
      'after-deploy-migrations',
      'shop.0004_drop, 0005',
      /input 'after-deploy-migrations': "0005" is not a migration name; expected app_label\.migration_name/
    ],
    ['migrate-statement-timeout', '0', /input 'migrate-statement-timeout': "0" is not a number of seconds/],
    ['migrate-lock-timeout', '-1', /input 'migrate-lock-timeout': -1 is negative/],
    ['migration-safety', 'refuze', /"refuze" is not a valid value \(did you mean 'refuse'\?\)/],
    ['rolling', '0', /input 'rolling': "0" is not a batch size/],
    ['rolling', '120%', /input 'rolling': "120%" is not a batch size/],
    ['release-name', 'v1;id', /not a safe release name/],
    ['host-fingerprint', 'abc', /not a SHA256 fingerprint/],
    ['health-check-url', 'ftp://x', /not an http\(s\) URL/],
    [
      'deploy-check',
      'wran',
      /input 'deploy-check': "wran" is not a valid value \(did you mean 'warn'\?\); expected one of warn, fail, off/
    ],
    ['ssh-key', 'not a key', /input 'ssh-key': is not a private key/],
    ['ssh-key', key.pub, /input 'ssh-key': is (not a private key|a public key)/]
  ])('rejects %s=%j', (name, value, message) => {
    expect(problems({ ...deployInputs, [name]: value })).toEqual([expect.stringMatching(message)])
  })
  it('requires a pinned host key', () => {
    expect(problems({ ...deployInputs, 'host-fingerprint': '' })).toEqual([
      expect.stringMatching(/known-hosts'.*both empty; the server's host key must be pinned/)
    ])
  })
  it('checks the passphrase of an encrypted key without echoing secrets', () => {
    const enc = keypair('s3cret-pass')
    const p = problems({ ...deployInputs, 'ssh-key': enc.priv, 'ssh-key-passphrase': 'wrong-pass' })
    expect(p).toEqual([expect.stringMatching(/ssh-key-passphrase'.*does not decrypt/)])
    expect(p.join()).not.toMatch(/wrong-pass|PRIVATE KEY/)
    expect(
      load({ ...deployInputs, 'ssh-key': enc.priv, 'ssh-key-passphrase': 's3cret-pass' }).ssh.passphrase
    ).toBe('s3cret-pass')
  })
  it('never puts a secret value in an error', () => {
    const p = problems({ ...deployInputs, 'ssh-key': 'hunter2-super-secret', port: 'x' })
    expect(p.join('\n')).not.toContain('hunter2')
    expect(p).toHaveLength(2)
  })
  it('refuses a tag that is not a safe release name', () => {
    expect(problems(deployInputs, { GITHUB_REF: 'refs/tags/v1$(id)' })).toEqual([
      expect.stringMatching(/the tag "v1\$\(id\)" is not a safe release name/)
    ])
  })
  it('rejects two ways of reloading', () => {
    expect(problems({ ...deployInputs, 'gunicorn-pidfile': '/run/g.pid', 'reload-command': 'true' })).toEqual(
      [expect.stringMatching(/input 'reload-command': is set together with gunicorn-pidfile/)]
    )
  })
})

describe('config file', () => {
  const write = (name: string, text: string): string => {
    writeFileSync(join(dir, name), text)
    return name
  }
  it('is read, and inputs override it', () => {
    const config = write(
      'a.yml',
      'hosts: [a.example.com, b.example.com]\nkeep-releases: 3\nmigrate: false\nuser: file-user\n'
    )
    const s = load({
      ...deployInputs,
      hosts: '',
      config,
      user: 'input-user',
      'host-fingerprint': `a.example.com=${FP} b.example.com=${FP}`
    })
    expect(s.ssh.hosts.map(h => h.host)).toEqual(['a.example.com', 'b.example.com'])
    expect(s.deploy.keepReleases).toBe(3)
    expect(s.deploy.migrate).toBe(false)
    expect(s.ssh.user).toBe('input-user')
    expect(s.configFile).toBe('a.yml')
  })
  it('is deploy.yml by default when it exists', () => {
    write('deploy.yml', 'keep-releases: 7\n')
    try {
      expect(load(deployInputs).deploy.keepReleases).toBe(7)
    } finally {
      rmSync(join(dir, 'deploy.yml'))
    }
  })
  it('reports invalid YAML with its line', () => {
    const config = write('bad.yml', 'hosts: a\nkeep-releases: [1, 2\nuser: x\n')
    expect(problems({ ...deployInputs, config })).toEqual([
      expect.stringMatching(/^bad\.yml line \d+: invalid YAML/)
    ])
  })
  it('reports unknown keys with a suggestion and the line', () => {
    const config = write('typo.yml', 'hosts: a\nkeep-release: 3\n')
    expect(problems({ ...deployInputs, config })).toEqual([
      "typo.yml: key 'keep-release' (line 2): unknown key (did you mean 'keep-releases'?); expected one of the action's inputs"
    ])
  })
  it('names the file and key of a bad value', () => {
    const config = write('val.yml', 'port: 70000\n')
    expect(problems({ ...deployInputs, config })).toEqual([
      expect.stringMatching(/^val\.yml: key 'port' \(line 1\): port 70000 is out of range/)
    ])
  })
  it('refuses secrets in the file', () => {
    const config = write('sec.yml', 'ssh-key: abc\n')
    expect(problems({ ...deployInputs, config })).toEqual([
      expect.stringMatching(/key 'ssh-key'.*secrets do not belong in a committed file/)
    ])
  })
})

describe('names and hosts', () => {
  it.each(['v1.2.0', 'abc1234-20260101T000000Z', 'release_1+build'])('%s is a safe release name', n =>
    expect(isSafeReleaseName(n)).toBe(true)
  )
  it.each(['', '.', '..', 'a/b', 'a b', "x'y", '$(id)', '-rf', 'a..b', 'x'.repeat(101), 'v1\n'])(
    '%j is not',
    n => expect(isSafeReleaseName(n)).toBe(false)
  )
  it('makes a default name from the tag, else SHA and UTC time', () => {
    expect(defaultReleaseName({ ref: 'refs/tags/v2.0', sha: 'x' }, new Date())).toBe('v2.0')
    expect(
      defaultReleaseName(
        { ref: 'refs/heads/main', sha: '0123456789abc' },
        new Date('2026-11-24T01:02:03.456Z')
      )
    ).toBe('0123456-20261124T010203Z')
  })
  it('parses host entries', () => {
    expect(parseHost('h.example.com:2200', 22)).toEqual({ host: 'h.example.com', port: 2200 })
    expect(parseHost('$(id)', 22)).toEqual(expect.stringContaining('is not a valid host'))
  })
})

describe('checks environment, timeout and word lists', () => {
  test('pip-args and venv-options are split as a shell splits words', () => {
    const s = load({
      ...deployInputs,
      'pip-args': `--no-binary a,b --find-links 'wheels dir' -q`,
      'venv-options': '--system-site-packages --prompt "my app"'
    })
    expect(s.deploy.pipArgs).toEqual(['--no-binary', 'a,b', '--find-links', 'wheels dir', '-q'])
    expect(s.deploy.venvOptions).toEqual(['--system-site-packages', '--prompt', 'my app'])
  })
  test('a broken quote or an expansion in pip-args is refused, naming the input', () => {
    expect(problems({ ...deployInputs, 'pip-args': '--find-links "wheels' })).toEqual([
      expect.stringMatching(/^input 'pip-args': unterminated " starting at position 14; expected words/)
    ])
    expect(problems({ ...deployInputs, 'venv-options': '--prompt $NAME' })).toEqual([
      expect.stringMatching(/^input 'venv-options': \$ \(an expansion\) at position 10/)
    ])
  })
  test('check-timeout is whole seconds ≥ 1, 1800 by default', () => {
    expect(load({ mode: 'check' }).checkTimeout).toBe(1800)
    expect(load({ mode: 'check', 'check-timeout': '60' }).checkTimeout).toBe(60)
    expect(problems({ mode: 'check', 'check-timeout': '0' })).toEqual([
      expect.stringMatching(/^input 'check-timeout': 0 is too small/)
    ])
  })
  test('command-timeout is whole seconds ≥ 1, 900 by default', () => {
    expect(load({ mode: 'check' }).ssh.commandTimeout).toBe(900)
    expect(load({ mode: 'check', 'command-timeout': '5' }).ssh.commandTimeout).toBe(5)
    expect(problems({ mode: 'check', 'command-timeout': '0' })).toEqual([
      expect.stringMatching(/^input 'command-timeout': 0 is too small; expected seconds ≥ 1/)
    ])
    expect(problems({ mode: 'check', 'command-timeout': '1.5' })).toEqual([
      expect.stringMatching(/^input 'command-timeout': "1.5" is not a whole number; expected seconds ≥ 1/)
    ])
  })
})

describe('issue 9 inputs', () => {
  const branch = { GITHUB_REF: 'refs/heads/main' }
  const config = (text: string): string => {
    writeFileSync(join(dir, 'i9.yml'), text)
    return 'i9.yml'
  }
  it('workflow_dispatch with mode deploy deploys, with auto it checks and needs no server inputs', () => {
    const env = { GITHUB_EVENT_NAME: 'workflow_dispatch', GITHUB_REF: 'refs/heads/main' }
    expect(load(deployInputs, env).mode).toBe('deploy')
    expect(load({}, env).mode).toBe('check')
  })
  it('nginx commands in deploy.yml turn nginx on, as the inputs do', () => {
    expect(
      load({ ...deployInputs, config: config('nginx-test-command: sudo -n /usr/sbin/nginx -t\n') }).deploy
    ).toMatchObject({
      nginx: true,
      nginxTestCommand: 'sudo -n /usr/sbin/nginx -t',
      nginxReloadCommand: 'sudo -n nginx -s reload'
    })
    expect(
      load({ ...deployInputs, config: config('nginx-reload-command: nginx -s reload\n') }).deploy.nginx
    ).toBe(true)
    expect(load({ ...deployInputs, 'nginx-reload-command': 'nginx -s reload' }).deploy.nginx).toBe(true)
    expect(load({ ...deployInputs, config: config('keep-releases: 2\n') }).deploy.nginx).toBe(false)
  })
  it('nginx: false wins over nginx commands, from the file or the inputs', () => {
    const both = config('nginx: false\nnginx-test-command: nginx -t\nnginx-reload-command: nginx -s reload\n')
    expect(load({ ...deployInputs, config: both }).deploy.nginx).toBe(false)
    expect(load({ ...deployInputs, nginx: 'false', 'nginx-test-command': 'nginx -t' }).deploy.nginx).toBe(
      false
    )
    expect(
      load({ ...deployInputs, nginx: 'false', config: config('nginx-test-command: nginx -t\n') }).deploy.nginx
    ).toBe(false)
    // an input overrides the file: nginx: true as input beats nginx: false in the file
    expect(load({ ...deployInputs, nginx: 'true', config: config('nginx: false\n') }).deploy.nginx).toBe(true)
  })
  it('comment, comment-key and github-deployment', () => {
    expect(load({}, branch).github).toMatchObject({
      comment: 'always',
      commentKey: undefined,
      deployment: true
    })
    expect(
      load(
        { comment: 'On-Failure', 'comment-key': 'py3.12-django_5.2', 'github-deployment': 'false' },
        branch
      ).github
    ).toMatchObject({
      comment: 'on-failure',
      commentKey: 'py3.12-django_5.2',
      deployment: false
    })
    expect(load({ config: config('comment: never\ncomment-key: a\n') }, branch).github).toMatchObject({
      comment: 'never',
      commentKey: 'a'
    })
  })
  it('refuses a bad comment mode and a comment-key that could break out of the marker', () => {
    expect(problems({ comment: 'sometimes' }, branch)).toEqual([
      `input 'comment': "sometimes" is not a valid value; expected one of always, on-failure, never`
    ])
    for (const key of ['a -->', 'a b', 'x'.repeat(65), '<!--']) {
      expect(problems({ 'comment-key': key }, branch)).toEqual([
        expect.stringMatching(
          /^input 'comment-key': ".*" cannot be used; expected 1–64 letters, digits, \. _ -/
        )
      ])
    }
    expect(problems({ 'github-deployment': 'maybe' }, branch)).toEqual([
      `input 'github-deployment': "maybe" is not a boolean; expected true or false`
    ])
  })
})

describe('fleets', () => {
  const fleetFile = (dir: string, text: string): string => {
    writeFileSync(join(dir, 'deploy.yml'), text)
    return dir
  }
  test('config hosts entries carry their own user, deploy-path and the primary mark; rolling and migrate modes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dd-fleet-settings-'))
    try {
      fleetFile(
        dir,
        [
          'hosts:',
          '  - { host: "web1:2222", user: alice, deploy-path: /srv/a/ }',
          '  - { host: web2, primary: true }',
          '  - web3',
          '  - { host: web4, port: 2200 }',
          '  - { host: "::1", port: 2201 }',
          'rolling: 50%',
          'migrate: every-host',
          'max-parallel: 2',
          ''
        ].join('\n')
      )
      const s = loadSettings({
        input: n =>
          ({
            ...deployInputs,
            hosts: '',
            'host-fingerprint': '',
            'known-hosts':
              '* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl'
          })[n] ?? '',
        env: {
          GITHUB_WORKSPACE: dir,
          GITHUB_EVENT_NAME: 'push',
          GITHUB_REF: 'refs/tags/v1.0.0',
          GITHUB_SHA: 'a'.repeat(40)
        }
      })
      expect(s.ssh.hosts).toEqual([
        { host: 'web1', port: 2222, user: 'alice', deployPath: '/srv/a' },
        { host: 'web2', port: 22, primary: true },
        { host: 'web3', port: 22 },
        { host: 'web4', port: 2200 },
        { host: '::1', port: 2201 }
      ])
      expect(s.deploy).toMatchObject({
        rolling: { percent: 50 },
        migrate: true,
        migrateEveryHost: true,
        maxParallel: 2
      })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  const fleetSettings = (dir: string, inputs: Record<string, string> = {}) =>
    loadSettings({
      input: n =>
        ({
          ...deployInputs,
          hosts: '',
          'host-fingerprint': '',
          'known-hosts': '* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
          ...inputs
        })[n] ?? '',
      env: {
        GITHUB_WORKSPACE: dir,
        GITHUB_EVENT_NAME: 'push',
        GITHUB_REF: 'refs/tags/v1.0.0',
        GITHUB_SHA: 'a'.repeat(40)
      }
    })
  test('each deploy.yml hosts entry keeps its own extras, also when one server is listed twice', () => {
    // Typed entries end to end: the primary mark and the deploy-path stay with the entry that has them, not with the
    // first entry whose address matches (matching back by parsing again marked web1 /srv/a primary).
    const dir = mkdtempSync(join(tmpdir(), 'dd-fleet-settings-'))
    try {
      fleetFile(
        dir,
        [
          'hosts:',
          '  - { host: web1, deploy-path: /srv/a }',
          '  - { host: web1, deploy-path: /srv/b, primary: true, roles: worker }',
          '  - "web2, web3"',
          ''
        ].join('\n')
      )
      expect(fleetSettings(dir).ssh.hosts).toEqual([
        { host: 'web1', port: 22, deployPath: '/srv/a' },
        { host: 'web1', port: 22, deployPath: '/srv/b', primary: true, roles: ['worker'] },
        { host: 'web2', port: 22 },
        { host: 'web3', port: 22 }
      ])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  test('roles: hosts entries and inventory hosts carry roles; reload-command may be a mapping of role to command', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dd-fleet-settings-'))
    try {
      fleetFile(
        dir,
        [
          'hosts:',
          '  - { host: web1, roles: [web, worker] }',
          '  - { host: jobs1, roles: worker }',
          '  - web2',
          'reload-command:',
          '  web: sudo -n systemctl reload gunicorn',
          '  worker: sudo -n systemctl restart celery',
          ''
        ].join('\n')
      )
      const s = fleetSettings(dir)
      expect(s.ssh.hosts).toEqual([
        { host: 'web1', port: 22, roles: ['web', 'worker'] },
        { host: 'jobs1', port: 22, roles: ['worker'] },
        { host: 'web2', port: 22 }
      ])
      expect(s.deploy.reloadCommand).toBe('sudo -n systemctl reload gunicorn')
      expect(s.deploy.roleReloadCommands).toEqual({ worker: 'sudo -n systemctl restart celery' })
      // The web role's command is the plain input: giving it as an input replaces only the web one.
      const input = fleetSettings(dir, { 'reload-command': 'kill -HUP 1' })
      expect(input.deploy.reloadCommand).toBe('kill -HUP 1')
      expect(input.deploy.roleReloadCommands).toEqual({ worker: 'sudo -n systemctl restart celery' })
      // A mapping with only other roles leaves the web reload to gunicorn-pidfile.
      fleetFile(dir, 'hosts:\n  - { host: jobs1, roles: worker }\nreload-command: { worker: echo w }\n')
      const worker = fleetSettings(dir, { 'gunicorn-pidfile': '/run/g.pid' })
      expect(worker.deploy).toMatchObject({
        gunicornPidfile: '/run/g.pid',
        roleReloadCommands: { worker: 'echo w' }
      })
      expect(worker.deploy.reloadCommand).toBeUndefined()
      // An inventory's deploy_roles.
      writeFileSync(join(dir, 'deploy.yml'), '')
      writeFileSync(
        join(dir, 'inventory.ini'),
        '[app]\nweb1 deploy_roles=web\njobs1 deploy_roles=worker,beat\nweb2\n'
      )
      const inv = fleetSettings(dir, { inventory: 'inventory.ini' })
      expect(inv.ssh.hosts).toEqual([
        { host: 'web1', port: 22, roles: ['web'] },
        { host: 'jobs1', port: 22, roles: ['worker', 'beat'] },
        { host: 'web2', port: 22 }
      ])
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  test('roles: a bad role name, a command for a role no host has, a non-string command are refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dd-fleet-settings-'))
    try {
      for (const [text, why] of [
        ['hosts:\n  - { host: web1, roles: [Web] }\n', /role "Web" of host web1 is not a role name/],
        ['hosts:\n  - { host: web1, roles: {} }\n', /roles of host web1 must be a role name or a list/],
        [
          'hosts:\n  - { host: jobs1, roles: worker }\nreload-command: { wrker: echo w }\n',
          /key 'reload-command' \(line 3\): role wrker is no host's role \(did you mean 'worker'\?\)/
        ],
        [
          'hosts:\n  - { host: jobs1, roles: worker }\nreload-command: { worker: [a, b] }\n',
          /the command of role worker must be a non-empty string/
        ]
      ] as const) {
        fleetFile(dir, text)
        expect(() => fleetSettings(dir)).toThrow(why)
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
  test('a bad per-host value, or two primaries, is refused naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'dd-fleet-settings-'))
    try {
      for (const [entries, why] of [
        ['  - { host: web1, deploy-path: srv/a }', /deploy-path of host web1: "srv\/a" is relative/],
        ['  - { host: web1, user: "a b" }', /user "a b" of host web1 is not a valid user name/],
        ['  - { host: "web1:22", port: 2200 }', /host web1:22 has a port in its name and a port: 2200/],
        ['  - { host: web1, port: 70000 }', /70000/],
        [
          '  - { host: web1, primary: true }\n  - { host: web2, primary: true }',
          /only one host can be primary/
        ]
      ] as const) {
        fleetFile(dir, `hosts:\n${entries}\n`)
        expect(() =>
          loadSettings({
            input: n => ({ ...deployInputs, hosts: '' })[n] ?? '',
            env: {
              GITHUB_WORKSPACE: dir,
              GITHUB_EVENT_NAME: 'push',
              GITHUB_REF: 'refs/tags/v1.0.0',
              GITHUB_SHA: 'a'.repeat(40)
            }
          })
        ).toThrow(why)
      }
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('issue 15: settings', () => {
  it('a malformed health-check-url is refused without its credentials in the error', () => {
    for (const url of [
      'http://admin:s3cret-pass@web1.example.com:99999/health/',
      'http://admin:s3cret pass@web 1/health/',
      'ftp://admin:s3cret-pass@web1.example.com/'
    ]) {
      const p = problems({ ...deployInputs, 'health-check-url': url })
      expect(p).toEqual([
        expect.stringMatching(/^input 'health-check-url': "[a-z]+:\/\/\*\*\*@web.*" is not an http\(s\) URL/)
      ])
      expect(p.join()).not.toMatch(/s3cret|admin/)
    }
  })
  it.each(['pull_request_review', 'pull_request_review_comment'])(
    'a %s event is a pull request: auto checks, deploy is refused, the comment goes to its PR',
    eventName => {
      expect(resolveMode('auto', { eventName, ref: 'refs/pull/9/merge' })).toBe('check')
      expect(
        problems({ ...deployInputs }, { GITHUB_EVENT_NAME: eventName, GITHUB_REF: 'refs/pull/9/merge' })
      ).toEqual([
        expect.stringMatching(new RegExp(`^input 'mode': mode deploy is refused on a ${eventName} event`))
      ])
      // The PR number from the event's payload (both carry pull_request), not only from the ref.
      const event = join(dir, `${eventName}.json`)
      writeFileSync(event, JSON.stringify({ action: 'submitted', pull_request: { number: 42 } }))
      const s = load(
        {},
        { GITHUB_EVENT_NAME: eventName, GITHUB_REF: 'refs/heads/feature', GITHUB_EVENT_PATH: event }
      )
      expect(s.context.prNumber).toBe(42)
    }
  )
  describe('the same server twice is refused, naming both', () => {
    it.each([
      [
        'web1.example.com web1.example.com:22',
        'web1.example.com and web1.example.com:22',
        'web1.example.com'
      ],
      ['WEB1.example.com. web1.example.com', 'WEB1.example.com. and web1.example.com', 'web1.example.com'],
      ['127.0.0.1 127.1', '127.0.0.1 and 127.1', '127.0.0.1'],
      ['[::1]:22 0:0:0:0:0:0:0:1', '[::1]:22 and 0:0:0:0:0:0:0:1', '::1']
    ])('hosts %j', (hosts, both, address) => {
      expect(
        problems({ ...deployInputs, hosts, 'host-fingerprint': '', 'known-hosts': `* ${key.pub.trim()}` })
      ).toEqual([
        `input 'hosts': ${both} are the same server (address ${address}, port 22, deploy-path /srv/app); expected each server once, or a deploy-path of its own for each`
      ])
    })
    it('names are not resolved: a name and its address, or two ports, are two hosts', () => {
      const many = { ...deployInputs, 'host-fingerprint': '', 'known-hosts': `* ${key.pub.trim()}` }
      expect(load({ ...many, hosts: 'localhost 127.0.0.1 127.0.0.1:2222' }).ssh.hosts).toHaveLength(3)
    })
    it('in deploy.yml, with users apart; a deploy-path of its own makes it another deployment', () => {
      const config = join(dir, 'same-server.yml')
      writeFileSync(
        config,
        'hosts:\n  - {host: web1.example.com, user: a}\n  - {host: web1.example.com, port: 22, user: b}\n'
      )
      const inputs = {
        ...deployInputs,
        hosts: '',
        config: 'same-server.yml',
        'host-fingerprint': `web1.example.com=${FP}`
      }
      expect(problems(inputs)).toEqual([
        "same-server.yml: key 'hosts' (line 1): web1.example.com and web1.example.com:22 are the same server (address web1.example.com, port 22, deploy-path /srv/app); expected each server once, or a deploy-path of its own for each"
      ])
      writeFileSync(
        config,
        'hosts:\n  - {host: web1.example.com}\n  - {host: web1.example.com, deploy-path: /srv/other}\n'
      )
      expect(load(inputs).ssh.hosts.map(h => h.deployPath ?? '/srv/app')).toEqual(['/srv/app', '/srv/other'])
    })
  })
})

describe('migrations at deploy', () => {
  it('defaults: a 5 s lock timeout, no statement timeout, nothing held back, rollback across contract refused', () => {
    expect(load(deployInputs).deploy.migrations).toEqual({
      lockTimeout: 5,
      statementTimeout: undefined,
      afterDeploy: [],
      safety: 'warn',
      allowContractRollback: false
    })
  })
  it('migration-safety: refuse by default with more than one host or rolling, warn on one; as given otherwise', () => {
    const safety = (i: Partial<Record<InputName, string>>) =>
      load({ ...deployInputs, ...i }).deploy.migrations.safety
    const two = { hosts: 'web1, web2', 'host-fingerprint': `web1=${FP} web2=${FP}` }
    expect(safety(two)).toBe('refuse')
    expect(safety({ rolling: '1' })).toBe('refuse')
    expect(safety({})).toBe('warn')
    expect(safety({ ...two, 'migration-safety': 'off' })).toBe('off')
    expect(safety({ 'migration-safety': 'REFUSE' })).toBe('refuse')
  })
  it('reads the after-deploy migrations as a list and the timeouts', () => {
    const m = load({
      ...deployInputs,
      'after-deploy-migrations': 'shop.0004_drop_note,\nblog.0002_remove_x',
      'migrate-lock-timeout': '0',
      'migrate-statement-timeout': '600',
      'allow-contract-rollback': 'true'
    }).deploy.migrations
    expect(m).toEqual({
      lockTimeout: 0,
      statementTimeout: 600,
      afterDeploy: ['shop.0004_drop_note', 'blog.0002_remove_x'],
      safety: 'warn',
      allowContractRollback: true
    })
  })
})

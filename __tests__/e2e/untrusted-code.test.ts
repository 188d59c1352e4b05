/**
 * The project's code and output are untrusted: the built action (dist/index.js) in check mode on a pull request
 * with every secret set, and deploys to a real OpenSSH server whose project prints workflow commands. What the
 * runner would do with the log is read by `readAsRunner` (the runner's own rules for `::` commands).
 */
import { jest } from '@jest/globals'
import { execFileSync, spawn } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { deployInputs, liveInputs, writeServerEnv } from '../../sandbox/inputs.js'
import { startTarget, type Target } from '../../sandbox/target.js'
import { DIST, expectOk, inputEnv, node24, Repo, runAction } from '../helpers/action.js'
import { startFakeGitHub, type FakeGitHub } from '../helpers/fake-github.js'
import { readAsRunner } from '../helpers/runner-log.js'

jest.setTimeout(240_000)

let gh: FakeGitHub
const temps: string[] = []

beforeAll(async () => {
  gh = await startFakeGitHub()
})
afterAll(async () => {
  await gh?.close()
  for (const d of temps) rmSync(d, { recursive: true, force: true })
})

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'dd-untrusted-'))
  temps.push(d)
  return d
}

/** Lines a project prints to try to drive the runner. */
const INJECTED = [
  '::error::injected error from the project',
  '  ::error file=pages/tests.py,line=1::indented injection',
  '::add-mask::Greeting',
  '::set-output name=deployed::v9',
  '::stop-commands::abc',
  '::warning::after a stop the project chose',
  '::abc::',
  '::notice::after the project resumed'
]

function expectNoInjectedCommand(log: string): void {
  const view = readAsRunner(log)
  const injected = view.commands.filter(
    c =>
      /injected|indented injection|after a stop|after the project resumed/.test(c.message) ||
      c.name === 'set-output' ||
      (c.name === 'add-mask' && c.message === 'Greeting') ||
      (c.name === 'stop-commands' && c.message === 'abc')
  )
  expect(injected).toEqual([])
  // The lines were printed and shown as text (so this test would see them if they acted).
  expect(view.visible).toContain('::error::injected error from the project')
  expect(view.visible).toContain('::add-mask::Greeting')
  expect(view.visible).toContain('::set-output name=deployed::v9')
}

describe('check mode on a pull request, every secret set', () => {
  let repo: Repo
  let keyLines: string[]
  const passphrase = 'pass-Phrase-7781-zz'
  const token = 'ghs_PullRequestToken_5c1e2d'
  const runnerTokens = {
    ACTIONS_RUNTIME_TOKEN: 'fake-runtime-token-8d1f0a',
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'fake-oidc-token-77b2c9',
    ACTIONS_ID_TOKEN_REQUEST_URL: 'https://fake-oidc.example/token-url-41af',
    ACTIONS_RESULTS_URL: 'https://fake-results.example/results-url-02bd',
    ACTIONS_CACHE_URL: 'https://fake-cache.example/cache-url-90ce',
    GITHUB_TOKEN: 'ghs_EnvironmentToken_93ab01'
  }

  beforeAll(() => {
    const keys = tempDir()
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-f', join(keys, 'k'), '-C', 'ci'])
    const key = readFileSync(join(keys, 'k'), 'utf8')
    keyLines = key.split('\n').filter(l => l.length >= 20 && !l.startsWith('-----'))
    repo = new Repo()
    // The repository happens to hold a line of the key (a leaked secret): the failing test prints it, and
    // @mentions someone, so both reach the summary, the annotations and the PR comment unless filtered.
    repo.write(
      'pages/test_leak.py',
      [
        'import json',
        'import os',
        'import sys',
        '',
        'from django.test import SimpleTestCase',
        '',
        '',
        'class Leak(SimpleTestCase):',
        '    def test_environ(self):',
        '        dump = json.dumps(dict(os.environ), indent=1, sort_keys=True)',
        "        with open(os.path.join(os.getcwd(), 'environ-dump.json'), 'w') as f:",
        '            f.write(dump)',
        // On stderr, unittest's own stream: stdout is another pipe, read in no fixed order against it.
        '        print(dump, file=sys.stderr)',
        ...INJECTED.map(l => `        print(${JSON.stringify(l)}, file=sys.stderr)`),
        `        self.fail('leaked ${keyLines[1]} cc @octocat and @acme/admins')`,
        ''
      ].join('\n')
    )
    repo.commit('a test that reads everything it can')
    writeEvent(repo.dir)
    inputs = {
      python: '/usr/bin/python3',
      checks: 'test',
      'ssh-key': key,
      'ssh-key-passphrase': passphrase,
      'github-token': token
    }
  })
  afterAll(() => repo?.remove())
  let inputs: Record<string, string>

  test('no secret reaches the tests, the log, the summary or the GitHub API; output is data', async () => {
    gh.reset()
    const r = await runAction(inputs, {
      workspace: repo.dir,
      env: {
        ...runnerTokens,
        GITHUB_EVENT_NAME: 'pull_request',
        GITHUB_REF: 'refs/pull/7/merge',
        GITHUB_EVENT_PATH: join(repo.dir, '.event.json'),
        GITHUB_API_URL: gh.url
      }
    })
    expect(r.code).toBe(1)
    expect(r.outputs).toMatchObject({ mode: 'check', checks: 'failed', deployed: 'false' })

    const secrets = [passphrase, token, ...keyLines, ...Object.values(runnerTokens)]
    // What the project's test saw.
    const dump = JSON.parse(readFileSync(join(repo.dir, 'environ-dump.json'), 'utf8')) as Record<
      string,
      string
    >
    expect(dump.GITHUB_REPOSITORY).toBe('acme/shop')
    expect(dump.PATH).toBeTruthy()
    expect(
      Object.keys(dump).filter(k => /^(INPUT_|ACTIONS_)|TOKEN|^GITHUB_(OUTPUT|ENV|STEP_SUMMARY)$/.test(k))
    ).toEqual([])
    const dumpText = JSON.stringify(dump)
    for (const s of secrets) expect(dumpText).not.toContain(s)

    // The log: our ::add-mask:: commands aside (the runner consumes them), no secret at all, except the key line
    // the project printed itself, which the runner masks.
    const ours = r.log.split('\n').filter(l => !l.startsWith('::add-mask::'))
    for (const s of [passphrase, token, ...Object.values(runnerTokens)])
      expect(ours.join('\n')).not.toContain(s)
    const view = readAsRunner(r.log)
    for (const s of secrets) expect(view.visible).not.toContain(s)
    for (const line of keyLines) expect(r.log).toContain(`::add-mask::${line}`)
    expectNoInjectedCommand(r.log)

    // Published text: summary, annotations, PR comment.
    expect(r.summary).toContain('leaked ***')
    const annotations = view.commands.filter(c => c.name === 'error' || c.name === 'warning')
    expect(annotations.map(a => a.message).join('\n')).toContain('leaked ***')
    const comment = gh.comments.get('acme/shop#7')?.[0]?.body ?? ''
    expect(comment).toContain('leaked ***')
    for (const published of [r.summary, comment, annotations.map(a => a.message).join('\n')]) {
      for (const s of secrets) expect(published).not.toContain(s)
      expect(published).not.toMatch(/@octocat|@acme\/admins/)
      expect(published).toContain('@\u200boctocat')
    }
    for (const req of gh.requests) {
      const sent = JSON.stringify({ ...req, headers: { ...req.headers, authorization: '' } })
      for (const s of secrets) expect(sent).not.toContain(s)
      expect(sent).not.toMatch(/@octocat/)
    }
  })

  /** A Django test that reads the environ and cmdline of every process from itself up to PID 1. */
  const WALKER = [
    'import json',
    'import os',
    '',
    'from django.test import SimpleTestCase',
    '',
    '',
    'class ProcessTree(SimpleTestCase):',
    '    def test_walk(self):',
    '        seen = []',
    '        pid = os.getpid()',
    '        while pid > 1:',
    "            entry = {'pid': pid}",
    "            for name in ('environ', 'cmdline'):",
    '                try:',
    "                    with open(f'/proc/{pid}/{name}', 'rb') as f:",
    "                        entry[name] = f.read().decode('utf-8', 'replace')",
    '                except OSError as e:',
    "                    entry[name + '_error'] = str(e)",
    '            seen.append(entry)',
    "            with open(f'/proc/{pid}/stat') as f:",
    "                pid = int(f.read().rsplit(')', 1)[1].split()[1])",
    "        with open(os.path.join(os.getcwd(), 'proc-walk.json'), 'w') as f:",
    '            json.dump(seen, f)',
    ''
  ].join('\n')
  interface Seen {
    pid: number
    environ?: string
    cmdline?: string
  }

  async function walkTree(node: string): Promise<{ log: string; seen: Seen[]; action: Seen }> {
    const walker = new Repo()
    try {
      walker.write('pages/test_proc.py', WALKER).commit('a test that reads every ancestor it can')
      writeEvent(walker.dir)
      const r = await runAction(
        { ...inputs, checks: 'test' },
        {
          workspace: walker.dir,
          node,
          env: {
            ...runnerTokens,
            GITHUB_EVENT_NAME: 'pull_request',
            GITHUB_REF: 'refs/pull/7/merge',
            GITHUB_EVENT_PATH: join(walker.dir, '.event.json'),
            GITHUB_API_URL: gh.url
          }
        }
      )
      expectOk(r)
      const seen = JSON.parse(readFileSync(join(walker.dir, 'proc-walk.json'), 'utf8')) as Seen[]
      // The walk really reached the action's own process and read its environment.
      const action = seen.find(e => e.cmdline?.includes(DIST))
      expect(action?.environ).toContain(`GITHUB_WORKSPACE=${walker.dir}`)
      return { log: r.log, seen, action: action! }
    } finally {
      walker.remove()
    }
  }

  test("under Node 24 no ancestor's /proc environ or cmdline holds an input or a runner token", async () => {
    const { log, seen, action } = await walkTree(node24())
    const secrets = [passphrase, token, ...keyLines, ...Object.values(runnerTokens)]
    for (const e of seen) {
      const text = `${e.environ ?? ''}\n${e.cmdline ?? ''}`
      for (const s of secrets)
        expect({ pid: e.pid, leaked: text.includes(s) }).toEqual({ pid: e.pid, leaked: false })
      expect(text).not.toMatch(/(^|\0)(INPUT_|ACTIONS_|GITHUB_TOKEN=)/)
    }
    // The inputs crossed the exec in a file that was gone before the checks ran.
    const handoff = /(?:^|\0)DJANGO_DEPLOY_INPUTS_FILE=([^\0]+)/.exec(action.environ ?? '')?.[1]
    expect(handoff).toBeDefined()
    expect(existsSync(handoff!)).toBe(false)
    expect(existsSync(dirname(handoff!))).toBe(false)
    // The inputs still worked (the key was parsed and masked) and a key in a PR job is called out.
    for (const line of keyLines) expect(log).toContain(`::add-mask::${line}`)
    expect(log).toContain(`::add-mask::${passphrase}`)
    expect(log).toMatch(
      /::warning title=django-deploy%3A deploy key in a pull-request job::ssh-key is set on a pull_request event/
    )
    expect(log).not.toContain('has no process.execve')
  })

  // The Node running the tests (20 here) has no process.execve; on one that has it there is nothing to show.
  const withoutExecve = typeof (process as { execve?: unknown }).execve !== 'function' ? test : test.skip
  withoutExecve(
    'on a Node without process.execve the action still works and says the inputs stay readable',
    async () => {
      const { log, action } = await walkTree(process.execPath)
      expect(log).toMatch(
        /Node v\d+\.\d+\.\d+ has no process\.execve: the action's inputs stay in its start-up environment/
      )
      // What the Node 24 test guards against is real: here the walk finds the key in the action's environment.
      expect(action.environ).toContain(keyLines[1])
    }
  )
})

test('a cancelled run (SIGTERM to the action) also ends the check and everything it started', async () => {
  const repo = new Repo()
  const pids = join(tempDir(), 'pids')
  try {
    const child = spawn(process.execPath, [DIST], {
      cwd: repo.dir,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/root',
        GITHUB_WORKSPACE: repo.dir,
        GITHUB_EVENT_NAME: 'pull_request',
        GITHUB_REF: 'refs/pull/7/merge',
        ...inputEnv({
          mode: 'check',
          checks: 'test',
          'test-command': `sleep 300 & echo $! >> ${pids}; echo $$ >> ${pids}; echo check-started; sleep 300`
        })
      },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let log = ''
    const closed = new Promise<number | null>(r => child.on('close', (code, signal) => r(signal ? -1 : code)))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the check never started:\n${log}`)), 60_000)
      child.stdout.on('data', (c: Buffer) => {
        log += c.toString()
        if (/^check-started$/m.test(log)) {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    child.kill('SIGTERM')
    // The action ends itself on the signal, once the check's group is killed and the report written.
    expect(await closed).toBe(130)
    const list = readFileSync(pids, 'utf8').trim().split('\n').map(Number)
    expect(list).toHaveLength(2)
    const alive = (pid: number): boolean => {
      try {
        return !/^State:\s*Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
      } catch {
        return false
      }
    }
    for (let i = 0; i < 100 && list.some(alive); i++) await new Promise(res => setTimeout(res, 100))
    expect(list.filter(alive)).toEqual([])
  } finally {
    repo.remove()
  }
})

test('a check printing 1 GB finishes in bounded memory, and its end is in the report', async () => {
  const repo = new Repo()
  try {
    const r = await runAction(
      {
        mode: 'check',
        checks: 'test',
        'test-command': 'yes | head -c 1G; echo the-end-of-1G >&2; exit 1'
      },
      {
        workspace: repo.dir,
        env: { GITHUB_EVENT_NAME: 'pull_request', GITHUB_REF: 'refs/pull/7/merge' },
        maxLog: 1 << 20,
        measureMemory: true,
        readSlowly: true,
        timeoutMs: 600_000
      }
    )
    expect(r.code).toBe(1)
    expect(r.outputs).toMatchObject({ mode: 'check', checks: 'failed' })
    expect(r.log).toMatch(/^y\nthe-end-of-1G\n/m)
    expect(r.summary).toContain('the-end-of-1G')
    // Kept whole, 1 GB of output would not even fit in one string (V8 stops at 2^29 characters).
    process.stdout.write(`peak RSS of the action while its check printed 1 GB: ${r.peakRssKb} KiB\n`)
    expect(r.peakRssKb).toBeGreaterThan(0)
    expect(r.peakRssKb).toBeLessThan(300 * 1024)
  } finally {
    repo.remove()
  }
})

test('deploy.yml values the checks print (python, working-directory, test-command) are data in the log', async () => {
  const repo = new Repo()
  const injected = (from: string): string => `\\n::error::injected from ${from}\\n::add-mask::Greeting`
  const cases = [
    `python: "/nonexistent/python3${injected('python')}"\nchecks: check\n`,
    // A directory with a line break in its name, committed by the pull request, without manage.py.
    `working-directory: "sub${injected('working-directory')}"\nchecks: check\n`,
    `test-command: "sleep 30${injected('test-command')}"\nchecks: test\ncheck-timeout: 1\n`
  ]
  mkdirSync(join(repo.dir, `sub\n::error::injected from working-directory\n::add-mask::Greeting`))
  writeFileSync(
    join(repo.dir, `sub\n::error::injected from working-directory\n::add-mask::Greeting`, 'x'),
    ''
  )
  try {
    for (const [i, config] of cases.entries()) {
      repo.write('deploy.yml', config).commit(`hostile deploy.yml ${i}`)
      const r = await runAction(
        {},
        { workspace: repo.dir, env: { GITHUB_EVENT_NAME: 'pull_request', GITHUB_REF: 'refs/pull/7/merge' } }
      )
      expect(r.code).toBe(1)
      const view = readAsRunner(r.log)
      const from = ['python', 'working-directory', 'test-command'][i]
      // (Our own group title and annotation hold the value too, escaped: %0A, not a line break.)
      const acted = view.commands.filter(c => c.message.startsWith('injected') || c.message === 'Greeting')
      expect(acted).toEqual([])
      // The value was printed (so this test would see it act), as text.
      expect(view.visible).toContain(`::error::injected from ${from}`)
      expect(view.visible).toContain('::add-mask::Greeting')
    }
  } finally {
    repo.remove()
  }
})

function writeEvent(dir: string): void {
  execFileSync('sh', ['-c', `printf '%s' '{"pull_request":{"number":7}}' > ${dir}/.event.json`])
}

describe('deploys whose project prints workflow commands, on real OpenSSH', () => {
  let t: Target
  let repo: Repo
  const TAG = (name: string): Record<string, string> => ({
    GITHUB_REF: `refs/tags/${name}`,
    GITHUB_API_URL: gh.url
  })
  const live = (): string => readlinkSync(join(t.deployPath, 'current'))

  beforeAll(async () => {
    t = await startTarget({ name: 'ddout' })
    repo = new Repo()
    const settings = repo.read('mysite/settings.py')
    repo.write(
      'mysite/settings.py',
      `${settings}\n\n# Printed whenever Django starts: on the server during migrate and collectstatic.\n${INJECTED.map(l => `print(${JSON.stringify(l)}, flush=True)`).join('\n')}\n`
    )
    repo.commit('settings that print workflow commands')
    await writeServerEnv(t)
  }, 120_000)
  afterAll(async () => {
    await t?.stop()
    repo?.remove()
  }, 120_000)

  test('remote output is data; a failing final deployment status changes nothing', async () => {
    gh.reset()
    gh.failWith({
      method: 'POST',
      path: /\/deployments\/\d+\/statuses$/,
      status: 500,
      message: 'status service down',
      body: b => (b as { state?: string }).state !== 'in_progress'
    })
    const r = await runAction(
      deployInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v1',
        'github-token': 'ghs_deploy_token_0042'
      }),
      { workspace: repo.dir, env: TAG('v1') }
    )
    expectOk(r)
    expect(r.outputs).toMatchObject({ deployed: 'true', release: 'v1' })
    expect(live()).toBe('releases/v1')
    expectNoInjectedCommand(r.log)
    // The server really printed them (so the test would catch them acting).
    expect(readAsRunner(r.log).visible).toMatch(/::warning::after a stop the project chose/)
    // The deployment was created and set in_progress; the final status failed: a warning, the deploy stands.
    expect(gh.deployments).toHaveLength(1)
    expect(gh.deployments[0].statuses.map(s => s.state)).toEqual(['in_progress'])
    expect(r.log).toMatch(
      /::warning::could not set the GitHub deployment's final status \(success\); the deploy's result stands/
    )
  })

  test('on Node 24 the re-executed action still deploys with its inputs (key, token) taken back', async () => {
    gh.reset()
    const r = await runAction(
      deployInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v1n',
        'github-token': 'ghs_deploy_token_0043'
      }),
      {
        workspace: repo.dir,
        env: { ...TAG('v1n'), ACTIONS_RUNTIME_TOKEN: 'fake-runtime-token-5e2a' },
        node: node24()
      }
    )
    expectOk(r)
    expect(r.log).not.toContain('has no process.execve')
    expect(r.outputs).toMatchObject({ deployed: 'true', release: 'v1n' })
    expect(live()).toBe('releases/v1n')
    // github-token came back too: the deployment was recorded with it.
    expect(gh.deployments).toHaveLength(1)
  })

  test('the password in health-check-url is a secret: sent, never printed, not in the summary', async () => {
    await t.startGunicorn()
    const password = 'hc-Pass-w0rd-3141'
    const r = await runAction(
      liveInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v1b',
        'health-check-url': `${t.url.replace('http://', `http://watch:${password}@`)}/health/`
      }),
      { workspace: repo.dir, env: TAG('v1b') }
    )
    expectOk(r)
    expect(live()).toBe('releases/v1b')
    expect(r.log).toContain(`::add-mask::${password}`)
    const shown = r.log
      .split('\n')
      .filter(l => !l.startsWith('::add-mask::'))
      .join('\n')
    expect(shown).not.toContain(password)
    expect(shown).toMatch(/http:\/\/\*\*\*@127\.0\.0\.1:\d+\/health\/ answered 200/)
    expect(r.summary).not.toContain(password)
  })

  test('a shared path whose parent is a committed symlink is refused before anything changes', async () => {
    const outside = tempDir()
    execFileSync('chmod', ['0777', outside])
    symlinkSync(outside, join(repo.dir, 'linked'))
    repo.commit('linked is a symlink to a directory outside the release')
    try {
      const r = await runAction(
        deployInputs(t, {
          mode: 'deploy',
          checks: 'none',
          'release-name': 'v2',
          'shared-paths': '.env, linked/uploads'
        }),
        { workspace: repo.dir, env: TAG('v2') }
      )
      expect(r.code).not.toBe(0)
      expect(r.outputs.deployed).toBe('false')
      expect(r.log).toMatch(
        /shared path linked\/uploads: linked is a symlink in the release \(committed to the repository\); a shared path cannot go through a symlink/
      )
      expect(r.log).toMatch(/step shared failed \(exit 65\)/)
      expect(existsSync(join(outside, 'uploads'))).toBe(false)
      expect(existsSync(join(t.deployPath, 'shared', 'linked'))).toBe(false)
      expect(live()).toBe('releases/v1b')
    } finally {
      repo.git('rm', '-q', 'linked')
      repo.commit('no more symlink')
    }
  })

  test('pip-args are split as shell words on the server (a quoted value with a comma stays one argument)', async () => {
    // Split on commas (as before), `other` would become a requirement of its own, which --no-index cannot find.
    const r = await runAction(
      deployInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v3',
        'pip-args': `--no-index --no-binary "none-such,other" --progress-bar 'off'`
      }),
      { workspace: repo.dir, env: TAG('v3') }
    )
    expectOk(r)
    expect(live()).toBe('releases/v3')
    expect(r.log).toMatch(/Successfully installed (\S+ )*sitebanner-1\.0\.0/)
  })

  test('file names and the deploy path are data: hostile ones deploy as written and run nothing on the server', async () => {
    // Names that a shell would run or split: a command substitution, a ; , both quotes, a leading dash.
    const names = ['inj-$(id>x).txt', 'semi;touch PWNED-SEMI', `it's "quoted".txt`, '-rf', 'back`id>y`tick']
    mkdirSync(join(repo.dir, 'hostile'), { recursive: true })
    for (const n of names) repo.write(join('hostile', n), `content of ${n}\n`)
    repo.commit('hostile file names')
    const path = `${t.deployPath}/we'ird $(touch PWNED-PATH) dir`
    // The whole site must still run from there: its database path goes through .env, not a shell.
    const r = await runAction(
      deployInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v3b',
        'deploy-path': path,
        'shared-paths': ''
      }),
      { workspace: repo.dir, env: TAG('v3b') }
    )
    try {
      expectOk(r)
      expect(readlinkSync(join(path, 'current'))).toBe('releases/v3b')
      for (const n of names)
        expect(readFileSync(join(path, 'releases', 'v3b', 'hostile', n), 'utf8')).toBe(`content of ${n}\n`)
      // Nothing the names or the path spelled out ran: no file they would have made, anywhere the user writes.
      const made = await t.run(
        `find ${t.home} ${t.deployPath} /tmp -xdev \\( -name 'PWNED*' -o -name x -o -name y \\) -newer ${join(path, 'releases', 'v3b', 'manage.py')} 2>/dev/null; true`
      )
      expect(made.stdout.trim()).toBe('')
      expect(live()).toBe('releases/v3')
    } finally {
      rmSync(path, { recursive: true, force: true })
      repo.git('rm', '-q', '-r', 'hostile')
      repo.commit('no more hostile names')
    }
  })

  test('a release that cannot be described never leaves a GitHub deployment in_progress', async () => {
    gh.reset()
    mkdirSync(join(repo.dir, 'untracked-site'), { recursive: true })
    const r = await runAction(
      deployInputs(t, {
        mode: 'deploy',
        checks: 'none',
        'release-name': 'v4',
        'working-directory': 'untracked-site',
        'github-token': 'ghs_deploy_token_0042'
      }),
      { workspace: repo.dir, env: TAG('v4') }
    )
    expect(r.code).not.toBe(0)
    expect(r.log).toMatch(/::error::git ls-tree failed/)
    for (const d of gh.deployments) expect(d.statuses.at(-1)?.state).not.toBe('in_progress')
    expect(live()).toBe('releases/v3')
  })
})

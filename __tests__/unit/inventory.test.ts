/**
 * Hosts from an Ansible inventory: the parser's rules and its errors (src/inventory.ts), and the `inventory` /
 * `inventory-group` inputs (src/settings.ts): every bad input is refused naming the input, what was wrong and
 * what is expected. What Ansible itself makes of real inventories is checked in e2e/inventory-ansible.test.ts.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expandRange, groupHosts, InventoryError, literalValue, parseInventory } from '../../src/inventory.js'
import { loadSettings, SettingsError, type InputName } from '../../src/settings.js'

const dir = mkdtempSync(join(tmpdir(), 'dd-inventory-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const keyFile = join(dir, 'key')
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile, '-C', 't'])
const base: Partial<Record<InputName, string>> = {
  mode: 'deploy',
  'ssh-key': readFileSync(keyFile, 'utf8'),
  // Every host of the inventories is pinned (pins bind to hosts: a bare fingerprint only serves one host).
  'known-hosts': `* ${readFileSync(`${keyFile}.pub`, 'utf8').trim()}`,
  'deploy-path': '/srv/app'
}

function load(inputs: Partial<Record<InputName, string>>) {
  return loadSettings({
    input: n => ({ ...base, ...inputs })[n] ?? '',
    env: {
      GITHUB_WORKSPACE: dir,
      GITHUB_EVENT_NAME: 'push',
      GITHUB_REF: 'refs/tags/v1.0.0',
      GITHUB_SHA: 'abc1234'
    }
  })
}
function problems(inputs: Partial<Record<InputName, string>>): string[] {
  try {
    load(inputs)
  } catch (e) {
    if (e instanceof SettingsError) return e.problems.map(p => `${p.where}: ${p.message}`)
    throw e
  }
  throw new Error('expected a SettingsError')
}
const write = (name: string, text: string): string => {
  writeFileSync(join(dir, name), text)
  return name
}
const parseError = (text: string, file = 'hosts.ini'): string => {
  try {
    parseInventory(text, file)
  } catch (e) {
    if (e instanceof InventoryError) return e.message
    throw e
  }
  throw new Error('expected an InventoryError')
}

describe('the inventory inputs', () => {
  const ini = write(
    'hosts.ini',
    [
      '[web]',
      'web[1:2].example.com',
      'web3.example.com ansible_host=10.0.0.3 ansible_port=2222 ansible_user=www',
      '[db]',
      'db.example.com',
      '[empty]',
      '[web:vars]',
      'ansible_user=deploy',
      ''
    ].join('\n')
  )

  it('give the group’s hosts with their address, port and user', () => {
    const s = load({ inventory: ini, 'inventory-group': 'web', port: '2200' })
    expect(s.ssh.hosts).toEqual([
      { host: 'web1.example.com', port: 2200, user: 'deploy' },
      { host: 'web2.example.com', port: 2200, user: 'deploy' },
      { host: '10.0.0.3', port: 2222, user: 'www', name: 'web3.example.com' }
    ])
  })

  it('default to the group all, and take the user input for hosts without ansible_user', () => {
    const s = load({ inventory: ini, user: 'ops' })
    expect(s.ssh.hosts.map(h => [h.name ?? h.host, h.user ?? s.ssh.user])).toEqual([
      ['web1.example.com', 'deploy'],
      ['web2.example.com', 'deploy'],
      ['web3.example.com', 'www'],
      ['db.example.com', 'ops']
    ])
  })

  it('refuse hosts and inventory together', () => {
    expect(problems({ inventory: ini, hosts: 'web1.example.com', user: 'u' })).toEqual([
      "input 'inventory': is set together with hosts (input 'hosts'); expected one source of hosts: hosts, or inventory with inventory-group"
    ])
  })

  it('refuse an unknown group, naming the groups there are', () => {
    expect(problems({ inventory: ini, 'inventory-group': 'wbe', user: 'u' })).toEqual([
      `input 'inventory-group': "wbe" is not a group in hosts.ini (did you mean 'web'?); expected one of all, ungrouped, web, db, empty`
    ])
  })

  it('refuse a group without hosts', () => {
    expect(problems({ inventory: ini, 'inventory-group': 'empty', user: 'u' })).toEqual([
      "input 'inventory-group': group empty in hosts.ini has no hosts; expected a group with at least one host"
    ])
  })

  it('refuse a group without an inventory, a missing file and a file Ansible would not read', () => {
    expect(problems({ hosts: 'a.example.com', user: 'u', 'inventory-group': 'web' })).toEqual([
      "input 'inventory-group': is set but inventory is empty; expected the inventory file it is a group of"
    ])
    expect(problems({ inventory: 'nope.ini', user: 'u' })).toEqual([
      `input 'inventory': cannot read "nope.ini" (no such file); expected the path of an Ansible inventory file (INI or YAML) in the repository`
    ])
    for (const outside of ['/etc/passwd', '../../etc/passwd'])
      expect(problems({ inventory: outside, user: 'u' })).toEqual([
        `input 'inventory': "${outside}" is outside the repository; expected a path inside it, e.g. deploy/inventory.ini`
      ])
    write('bad.ini', '[web]\nweb1 ; comment\n')
    expect(problems({ inventory: 'bad.ini', user: 'u' })).toEqual([
      `input 'inventory': "bad.ini" is not an inventory Ansible reads: line 2: ";" is not a key=value host variable`
    ])
  })

  it('refuse bad ansible_host, ansible_port and ansible_user values, naming the host', () => {
    write(
      'values.ini',
      [
        'a ansible_host="$(touch x)"',
        'b ansible_port=70000',
        'c ansible_port=twenty',
        "d ansible_user='root; id'",
        'e ansible_host=10.0.0.5:22',
        ''
      ].join('\n')
    )
    expect(problems({ inventory: 'values.ini', user: 'u' })).toEqual([
      `input 'inventory': host a of group all in values.ini: ansible_host "$(touch x)" is not a host name or address; expected e.g. web1.example.com or 10.0.0.5`,
      "input 'inventory': host b of group all in values.ini: ansible_port: port 70000 is out of range; expected 1–65535",
      `input 'inventory': host c of group all in values.ini: ansible_port: port "twenty" is not a whole number; expected 1–65535`,
      `input 'inventory': host d of group all in values.ini: ansible_user "root; id" is not a valid user name`,
      `input 'inventory': host e of group all in values.ini: ansible_host "10.0.0.5:22" is not a host name or address; expected e.g. web1.example.com or 10.0.0.5`
    ])
  })

  it('need the user input only for hosts the inventory gives no user', () => {
    expect(problems({ inventory: ini })).toEqual([
      "input 'user': is empty; deploy needs the SSH user that owns deploy-path (the inventory gives no ansible_user for db.example.com)"
    ])
    expect(load({ inventory: ini, 'inventory-group': 'web' }).ssh.hosts).toHaveLength(3)
  })

  it('can come from deploy.yml', () => {
    write('deploy.yml', `inventory: ${ini}\ninventory-group: db\nuser: ops\n`)
    try {
      expect(load({}).ssh.hosts).toEqual([{ host: 'db.example.com', port: 22 }])
    } finally {
      rmSync(join(dir, 'deploy.yml'))
    }
  })
})

describe('the parser', () => {
  it('expands ranges as Ansible does', () => {
    expect(expandRange('web[01:03].x')).toEqual(['web01.x', 'web02.x', 'web03.x'])
    expect(expandRange('w[1:5:2]')).toEqual(['w1', 'w3', 'w5'])
    expect(expandRange('db-[a:c]')).toEqual(['db-a', 'db-b', 'db-c'])
    expect(expandRange('r[1:2]c[a:b]')).toEqual(['r1ca', 'r1cb', 'r2ca', 'r2cb'])
    expect(expandRange('h[:2]')).toEqual(['h0', 'h1', 'h2'])
  })

  it('reads values as Python literals, as Ansible’s INI plugin does', () => {
    expect(literalValue('2222')).toBe(2222)
    expect(literalValue("'2222'")).toBe('2222')
    expect(literalValue('True')).toBe(true)
    expect(literalValue('deploy')).toBe('deploy')
  })

  it('gives a child group’s variables precedence over its parents’, and the host’s over all', () => {
    const inv = parseInventory(
      '[a]\nh ansible_port=1\n[p:children]\na\n[a:vars]\nansible_user=child\n[p:vars]\nansible_user=parent\nansible_port=2\n[all:vars]\nansible_user=all\nx=1\n',
      'i.ini'
    )
    expect(groupHosts(inv, 'p')).toEqual([
      { name: 'h', vars: { ansible_user: 'child', ansible_port: 1, x: 1 } }
    ])
  })

  it('refuses what Ansible refuses, with the line', () => {
    expect(parseError('[web:vars]\nx=1\n')).toBe(
      'line 1: section [web:vars] is for a group that is never defined'
    )
    expect(parseError('[p:children]\nweb\n')).toBe(
      'line 2: section [p:children] names group web, which is never defined'
    )
    expect(parseError('[web:hostz]\n')).toMatch(/^line 1: section \[web:hostz\] has an unknown type "hostz"/)
    expect(parseError('[web group]\n')).toMatch(/^line 1: invalid section "\[web group\]"/)
    expect(parseError('[a:children]\nb\n[b:children]\na\n[b]\n[a]\n')).toMatch(/makes a loop/)
    expect(parseError('[web]\nh[1:3:0]\n')).toMatch(/step "0" is not a positive whole number/)
    expect(parseError('[web]\nh[01:3]\n')).toMatch(/same length when zero-padded/)
    expect(parseError('[web]\nh:\n')).toMatch(/ends in ':'/)
    expect(parseError('[web]\nh "unclosed\n')).toMatch(/no closing quotation/)
    expect(parseError('all:\n  hosts: [a, b]\n', 'i.yml')).toBe('the "hosts" of group all must be a mapping')
    expect(parseError('- a\n', 'i.yaml')).toMatch(/a YAML inventory is a mapping of group names/)
    expect(parseError('all: {hosts: {a: }\n', 'i.yml')).toMatch(/^line \d+: invalid YAML/)
  })
})

describe('issue 15: inventory', () => {
  it('a symlink inside the repository that leads outside it is refused before it is read', () => {
    const secret = mkdtempSync(join(tmpdir(), 'dd-outside-'))
    try {
      writeFileSync(join(secret, 'hosts.ini'), '[web]\ntop-secret-line\n')
      symlinkSync(join(secret, 'hosts.ini'), join(dir, 'linked.ini'))
      expect(problems({ inventory: 'linked.ini', user: 'u' })).toEqual([
        `input 'inventory': "linked.ini" is a symlink that leads outside the repository; expected a path inside it, e.g. deploy/inventory.ini`
      ])
      // A link that stays inside is read.
      write('real.ini', '[web]\nweb1\n')
      symlinkSync('real.ini', join(dir, 'inside-link.ini'))
      expect(load({ inventory: 'inside-link.ini', user: 'u' }).ssh.hosts).toEqual([
        { host: 'web1', port: 22 }
      ])
    } finally {
      rmSync(secret, { recursive: true, force: true })
    }
  })
  it('two inventory names for one ansible_host and port are refused, naming both', () => {
    write(
      'aliases.ini',
      '[web]\nweb1 ansible_host=10.0.0.5\nweb1-old ansible_host=10.0.0.5 ansible_port=22 ansible_user=other\nweb2 ansible_host=10.0.0.5 ansible_port=2222\n'
    )
    expect(problems({ inventory: 'aliases.ini', user: 'u' })).toEqual([
      "input 'inventory': web1 and web1-old are the same server (address 10.0.0.5, port 22, deploy-path /srv/app); expected each server once, or a deploy-path of its own for each"
    ])
  })
})

/**
 * Setup (`mode: setup`): who connects as the administrator, what the app is called on the server, its domains,
 * TLS and secrets. Everything is checked here, before anything connects: a name that reaches a file name, a unit
 * or an nginx directive is refused, never rewritten.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import ssh2 from 'ssh2'
import { HOSTNAME, IPV6, USERNAME } from './hosts.js'
import { INPUTS, LETS_ENCRYPT, splitList, type RawValues, type TLS_MODES } from './sources.js'

export type TlsMode = (typeof TLS_MODES)[number]

export interface SetupSettings {
  /** The administrator setup connects as: root, or a user with passwordless sudo. */
  user: string
  privateKey: string
  /** The name of what setup makes for this project: units, nginx site, sudoers file. */
  app: string
  /** The deploy key's public half (`ssh-key`), as an authorized_keys line. */
  publicKey: string
  /** shared/.env's content (a secret), when given. */
  envFile?: string
  domains: string[]
  tls: TlsMode
  acmeDirectory: string
  acmeEmail?: string
  acmeCaCertificate?: string
  tlsCertificate?: string
  tlsKey?: string
  /** Addresses (or CIDR ranges) of the TLS-ending load balancers (tls: off). */
  trustedProxies: string[]
  /** Managed files edited by hand, and files setup did not write, are replaced instead of refused. */
  overwrite: boolean
  /** `package.module` (or `module:callable`) Gunicorn serves. */
  wsgiModule: string
  maxBodySize: string
  /** The URL prefixes nginx serves from the deploy path's static/ and shared/media/ (the project's STATIC_URL, MEDIA_URL). */
  staticUrl: string
  mediaUrl: string
}

/** A name that is safe as a unit, an nginx site, a sudoers.d file (no dot: sudo skips those) and a path part. */
export const APP_NAME = /^[a-z0-9][a-z0-9_-]{0,39}$/
const WSGI = /^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$/
const EMAIL = /^[^\s@'"\\<>;]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/
const ENV_KEY = /^(export\s+)?[A-Za-z_][A-Za-z0-9_]*\s*=/
const SIZE = /^\d{1,6}[kKmMgG]?$/
const PLAIN_PATH = /^\/[A-Za-z0-9._/-]+$/
const URL_PREFIX = /^\/([A-Za-z0-9_~-][A-Za-z0-9._~-]*\/)+$/
const CIDR = /^([0-9.]+|[0-9A-Fa-f:]+)(\/\d{1,3})?$/

/**
 * The setup section. `deployPaths`: the deploy-path input and the hosts' own; they go into systemd units and the
 * nginx site, which have no quoting a shell's, so setup takes plain paths only.
 */
export function readSetup(
  raw: RawValues,
  repo: string,
  workingDirectory: string,
  deployPaths: string[]
): SetupSettings {
  for (const p of deployPaths)
    if (p && !PLAIN_PATH.test(p))
      raw.fail(
        raw.get('deploy-path'),
        `"${p}" has characters systemd units and nginx cannot take unquoted; setup expects a plain path (letters, digits, / . _ -), e.g. /srv/mysite`
      )
  const app = readApp(raw, repo)
  const tls = raw.choice('tls')
  const domains = readDomains(raw, tls)
  const acmeDirectory = raw.url('acme-directory') ?? LETS_ENCRYPT
  const s: SetupSettings = {
    user: readSetupUser(raw),
    privateKey: readSetupKey(raw),
    app,
    publicKey: publicHalf(raw),
    envFile: readEnvFile(raw),
    domains,
    tls,
    acmeDirectory,
    acmeEmail: readEmail(raw),
    acmeCaCertificate: readPem(raw, 'acme-ca-certificate', 'certificate'),
    tlsCertificate: readPem(raw, 'tls-certificate', 'certificate'),
    tlsKey: readPem(raw, 'tls-key', 'key'),
    trustedProxies: readProxies(raw, tls),
    overwrite: raw.bool('setup-overwrite'),
    wsgiModule: readWsgi(raw, workingDirectory),
    maxBodySize: readSize(raw),
    staticUrl: readUrlPrefix(raw, 'static-url'),
    mediaUrl: readUrlPrefix(raw, 'media-url')
  }
  if (s.staticUrl === s.mediaUrl)
    raw.fail(
      raw.get('media-url'),
      `is the same as static-url (${s.staticUrl}); nginx serves each from its own directory`
    )
  checkTls(raw, s)
  return s
}

function readApp(raw: RawValues, repo: string): string {
  const r = raw.get('app')
  const name = r.value || repo.toLowerCase()
  if (APP_NAME.test(name)) return name
  raw.fail(
    r,
    r.value
      ? `"${r.value}" is not a safe app name; expected lowercase letters, digits, - and _ (at most 40, no dot), e.g. mysite`
      : `is empty and the repository's name "${repo}" is not a safe app name (lowercase letters, digits, - and _, no dot); set app, e.g. app: mysite`
  )
  return 'app'
}

function readSetupUser(raw: RawValues): string {
  const r = raw.get('setup-user')
  if (!USERNAME.test(r.value))
    raw.fail(r, `"${r.value}" is not a valid user name; expected root or a user with passwordless sudo`)
  return r.value
}

function readSetupKey(raw: RawValues): string {
  const key = raw.get('setup-ssh-key').value.replace(/\r\n/g, '\n')
  if (!key) {
    raw.fail(
      "input 'setup-ssh-key'",
      "is empty; setup needs the administrator's private key, e.g. ${{ secrets.SETUP_KEY }}"
    )
    return ''
  }
  const parsed = ssh2.utils.parseKey(key)
  const one = Array.isArray(parsed) ? parsed[0] : parsed
  if (parsed instanceof Error || !one || !one.isPrivateKey())
    raw.fail(
      "input 'setup-ssh-key'",
      'is not an unencrypted private key; expected the text of an OpenSSH or PEM private key (BEGIN … PRIVATE KEY) without a passphrase'
    )
  return key
}

/** The deploy key's public half, for the deploy user's authorized_keys (`ssh-key` itself is checked by ssh.ts). */
function publicHalf(raw: RawValues): string {
  const key = raw.get('ssh-key').value.replace(/\r\n/g, '\n')
  const pass = raw.get('ssh-key-passphrase').value || undefined
  if (!key) return ''
  const parsed = ssh2.utils.parseKey(key, pass)
  const one = Array.isArray(parsed) ? parsed[0] : parsed
  if (parsed instanceof Error || !one) return ''
  return `${one.type} ${one.getPublicSSH().toString('base64')} django-deploy`
}

function readEnvFile(raw: RawValues): string | undefined {
  const text = raw.get('env-file').value.replace(/\r\n/g, '\n')
  if (!text) return undefined
  text.split('\n').forEach((line, i) => {
    const l = line.trim()
    if (!l || l.startsWith('#') || ENV_KEY.test(l)) return
    // The value is a secret: the message names the line, never its text.
    raw.fail(
      "input 'env-file'",
      `line ${i + 1} is not KEY=VALUE (nor empty, nor a # comment); expected lines like SECRET_KEY=…`
    )
  })
  return text
}

function readDomains(raw: RawValues, tls: TlsMode): string[] {
  const r = raw.get('domains')
  const domains = splitList(r.value).map(d => d.toLowerCase())
  if (!domains.length) {
    raw.fail(
      r,
      'is empty; setup needs the names the site answers to (nginx server_name), e.g. domains: mysite.example.com'
    )
    return []
  }
  for (const d of domains) {
    const wildcard = d.startsWith('*.')
    if (!HOSTNAME.test(wildcard ? d.slice(2) : d) || d.endsWith('.'))
      raw.fail(
        r,
        `"${d}" is not a domain name; expected names like mysite.example.com, separated by spaces or commas`
      )
    else if (wildcard && tls === 'acme')
      raw.fail(
        r,
        `"${d}" is a wildcard: tls acme validates over HTTP (HTTP-01), which cannot issue wildcards; expected plain names, or tls: files`
      )
  }
  return domains
}

function readEmail(raw: RawValues): string | undefined {
  const r = raw.get('acme-email')
  if (r.value && !EMAIL.test(r.value))
    raw.fail(r, `"${r.value}" is not an e-mail address; expected e.g. admin@example.com`)
  return r.value || undefined
}

function readPem(
  raw: RawValues,
  name: 'acme-ca-certificate' | 'tls-certificate' | 'tls-key',
  kind: 'certificate' | 'key'
): string | undefined {
  const r = raw.get(name)
  const text = r.value.replace(/\r\n/g, '\n').trim()
  if (!text) return undefined
  try {
    if (kind === 'key') createPrivateKey(text)
    else new X509Certificate(text)
  } catch {
    raw.fail(
      `input '${name}'`,
      kind === 'key'
        ? 'is not a PEM private key; expected -----BEGIN PRIVATE KEY----- …'
        : 'is not a PEM certificate; expected -----BEGIN CERTIFICATE----- …'
    )
    return undefined
  }
  return `${text}\n`
}

function readProxies(raw: RawValues, tls: TlsMode): string[] {
  const r = raw.get('trusted-proxies')
  const list = splitList(r.value)
  for (const a of list) {
    const [addr] = a.split('/')
    if (!CIDR.test(a) || (addr.includes(':') ? !IPV6.test(addr) : !/^(\d{1,3}\.){3}\d{1,3}$/.test(addr)))
      raw.fail(r, `"${a}" is not an IP address or CIDR range; expected e.g. 10.0.0.5 or 10.0.0.0/24`)
  }
  if (tls === 'off' && !list.length)
    raw.fail(
      r,
      'is empty but tls is off; expected the addresses of the load balancer that ends TLS (its X-Forwarded-Proto is trusted from them only)'
    )
  if (tls !== 'off' && list.length)
    raw.fail(r, `is set but tls is ${tls}; expected it only with tls: off (a TLS-ending load balancer)`)
  return list
}

/** `wsgi-module`, else the one package of the project (beside manage.py) that has a wsgi.py. */
function readWsgi(raw: RawValues, dir: string): string {
  const r = raw.get('wsgi-module')
  if (r.value) {
    if (!WSGI.test(r.value))
      raw.fail(r, `"${r.value}" is not a Python module path; expected e.g. mysite.wsgi`)
    return r.value
  }
  let found: string[] = []
  try {
    found = readdirSync(dir, { withFileTypes: true })
      .filter(
        e => e.isDirectory() && existsSync(join(dir, e.name, 'wsgi.py')) && /^[A-Za-z_]\w*$/.test(e.name)
      )
      .map(e => `${e.name}.wsgi`)
  } catch {
    found = []
  }
  if (found.length === 1) return found[0]
  raw.fail(
    r,
    found.length
      ? `is empty and the project has several wsgi.py (${found.join(', ')}); expected the one Gunicorn serves, e.g. ${found[0]}`
      : 'is empty and no package beside manage.py has a wsgi.py; expected the module Gunicorn serves, e.g. mysite.wsgi'
  )
  return 'app.wsgi'
}

/** A URL path prefix for an nginx location: it reaches the site file unquoted, so plain characters only. */
function readUrlPrefix(raw: RawValues, name: 'static-url' | 'media-url'): string {
  const r = raw.get(name)
  if (!URL_PREFIX.test(r.value))
    raw.fail(
      r,
      `"${r.value}" is not a URL path prefix nginx can serve; expected the project's ${name === 'static-url' ? 'STATIC_URL' : 'MEDIA_URL'} as a path starting and ending with /, of letters, digits and . _ ~ - (e.g. ${INPUTS[name].default})`
    )
  return r.value
}

function readSize(raw: RawValues): string {
  const r = raw.get('max-body-size')
  if (!SIZE.test(r.value)) raw.fail(r, `"${r.value}" is not an nginx size; expected e.g. 20m`)
  return r.value
}

/** What each TLS mode needs, and what it must not be given. */
function checkTls(raw: RawValues, s: SetupSettings): void {
  if (s.tls === 'files') {
    if (!s.tlsCertificate && !raw.get('tls-certificate').value)
      raw.fail(
        "input 'tls-certificate'",
        'is empty but tls is files; expected the PEM certificate chain for the domains'
      )
    if (!s.tlsKey && !raw.get('tls-key').value)
      raw.fail(
        "input 'tls-key'",
        'is empty but tls is files; expected the PEM private key of tls-certificate'
      )
    if (s.tlsCertificate && s.tlsKey) {
      const cert = new X509Certificate(s.tlsCertificate)
      if (!cert.checkPrivateKey(createPrivateKey(s.tlsKey)))
        raw.fail("input 'tls-key'", 'is not the private key of tls-certificate; expected the pair')
      for (const d of s.domains)
        if (!d.startsWith('*.') && !cert.checkHost(d))
          raw.fail(
            "input 'tls-certificate'",
            `does not cover the domain ${d}; expected a certificate for every name in domains`
          )
    }
  } else {
    for (const n of ['tls-certificate', 'tls-key'] as const)
      if (raw.get(n).value)
        raw.fail(`input '${n}'`, `is set but tls is ${s.tls}; expected it only with tls: files`)
  }
  if (s.tls !== 'acme')
    for (const n of ['acme-email', 'acme-ca-certificate'] as const)
      if (raw.get(n).value)
        raw.fail(`input '${n}'`, `is set but tls is ${s.tls}; expected it only with tls: acme`)
}

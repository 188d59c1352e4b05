/**
 * The plan of `mode: setup` on one host, pure: what the host should hold (the managed files rendered for it,
 * the packages, the deploy user, the layout, the certificate), what inspect found there, and from both each
 * item's status (created, changed, unchanged, refused) and the steps that apply only what differs.
 */
import { renderStep, type Step } from '../deploy/plan.js'
import * as r from '../remote/setup.js'
import type { SetupSettings } from '../settings/setup.js'
import * as f from './files.js'

export type ItemStatus = 'created' | 'changed' | 'unchanged' | 'refused'

export interface ManagedFile {
  item: string
  path: string
  content: string
  mode: string
  owner: string
  /** Its content is a secret: never diffed, never printed. */
  secret?: boolean
  check?: string
}

/** What one host should hold. */
export interface Desired {
  s: SetupSettings
  user: string
  deployPath: string
  packages: string[]
  files: ManagedFile[]
  socket: ManagedFile
  service: ManagedFile
  site: ManagedFile
  siteLink: { link: string; target: string }
}

export const SUPPORTED_OS: Record<string, string[]> = { debian: ['12', '13'], ubuntu: ['22.04', '24.04'] }

export function desired(s: SetupSettings, user: string, deployPath: string): Desired {
  const p = { app: s.app, user, deployPath }
  const tls = f.tlsDir(s.app)
  const files: ManagedFile[] = []
  if (s.envFile)
    files.push({
      item: 'shared/.env',
      path: `${deployPath}/shared/.env`,
      content: f.envFile(s.app, s.envFile),
      mode: '600',
      owner: user,
      secret: true
    })
  files.push({
    item: 'sudoers',
    path: `/etc/sudoers.d/${s.app}`,
    content: f.sudoers(p),
    mode: '440',
    owner: 'root',
    check: r.VISUDO
  })
  if (s.tls === 'files') {
    files.push({
      item: 'tls certificate',
      path: `${tls}/fullchain.pem`,
      content: f.pemFile(s.app, s.tlsCertificate ?? ''),
      mode: '644',
      owner: 'root'
    })
    files.push({
      item: 'tls key',
      path: `${tls}/privkey.pem`,
      content: f.pemFile(s.app, s.tlsKey ?? ''),
      mode: '600',
      owner: 'root',
      secret: true
    })
  }
  if (s.tls === 'acme') {
    if (s.acmeCaCertificate) {
      files.push({
        item: 'acme CA',
        path: `${tls}/acme-ca.pem`,
        content: f.pemFile(s.app, s.acmeCaCertificate),
        mode: '644',
        owner: 'root'
      })
      files.push({
        item: 'certbot renewal CA',
        path: `/etc/systemd/system/certbot.service.d/django-deploy-${s.app}.conf`,
        content: f.certbotDropIn(s.app),
        mode: '644',
        owner: 'root'
      })
    }
    files.push({
      item: 'certbot deploy hook',
      path: `/etc/letsencrypt/renewal-hooks/deploy/django-deploy-${s.app}`,
      content: f.deployHook(s.app),
      mode: '755',
      owner: 'root'
    })
  }
  const unit = (kind: 'socket' | 'service', content: string): ManagedFile => ({
    item: `${s.app}.${kind}`,
    path: `${f.unitDir}/${s.app}.${kind}`,
    content,
    mode: '644',
    owner: 'root'
  })
  return {
    s,
    user,
    deployPath,
    packages: ['nginx', 'python3', 'python3-venv', 'sudo', ...(s.tls === 'acme' ? ['certbot'] : [])],
    files,
    socket: unit('socket', f.socketUnit(p)),
    service: unit('service', f.serviceUnit(p, s.wsgiModule)),
    site: {
      item: `nginx site ${s.app}`,
      path: `/etc/nginx/sites-available/${s.app}`,
      content: f.nginxSite(s, deployPath),
      mode: '644',
      owner: 'root'
    },
    siteLink: { link: `/etc/nginx/sites-enabled/${s.app}`, target: `/etc/nginx/sites-available/${s.app}` }
  }
}

/** Every file inspect reads, in the order of its `file=<i>` lines. */
export function inspected(d: Desired): ManagedFile[] {
  return [...d.files, d.socket, d.service, d.site]
}

export function inspectScript(d: Desired, keyBlob: string): string {
  const live = `/etc/letsencrypt/live/${d.s.app}/fullchain.pem`
  return r.setupInspect({
    user: d.user,
    keyBlob,
    deployPath: d.deployPath,
    packages: d.packages,
    app: d.s.app,
    files: inspected(d).map(m => m.path),
    siteLink: d.siteLink,
    certbot: d.s.tls === 'acme' ? { live, conf: `/etc/letsencrypt/renewal/${d.s.app}.conf` } : undefined
  })
}

export type FileState =
  | { state: 'absent' }
  | { state: 'other' }
  | { state: 'present'; sha: string; stamp?: string; body: string; mode: string; owner: string }

export interface HostFacts {
  os: string
  missing: string[]
  user: boolean
  key: boolean
  layout: boolean
  current: boolean
  enabled: boolean
  siteLink?: 'yes' | 'other' | 'file'
  cert?: { server?: string; domains: string[] }
  files: FileState[]
}

export function parseFacts(out: string, count: number): HostFacts {
  const facts: HostFacts = {
    os: '',
    missing: [],
    user: false,
    key: false,
    layout: false,
    current: false,
    enabled: false,
    files: []
  }
  facts.files = Array.from({ length: count }, () => ({ state: 'absent' }))
  for (const line of out.split('\n')) {
    const [k, v = ''] = [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]
    if (k === 'os') facts.os = v.trim()
    else if (k === 'missing') facts.missing.push(v)
    else if (k === 'user' || k === 'key' || k === 'layout' || k === 'current' || k === 'enabled')
      facts[k] = v === 'yes' || v === 'ok'
    else if (k === 'site-link') facts.siteLink = v as HostFacts['siteLink']
    else if (k === 'cert-server') (facts.cert ??= { domains: [] }).server = v.trim()
    else if (k === 'cert-domain') (facts.cert ??= { domains: [] }).domains.push(v.trim())
    else if (k === 'file') {
      const [i, state, sha, stamp, body, mode, owner] = v.split(' ')
      if (Number(i) >= count) continue
      facts.files[Number(i)] =
        state === 'present'
          ? { state, sha, stamp: stamp === '-' ? undefined : stamp, body, mode, owner }
          : { state: state === 'other' ? 'other' : 'absent' }
    }
  }
  return facts
}

/** Why setup refuses this host before changing anything, if it does. */
export function osProblem(os: string): string | undefined {
  const [id, version] = os.split(' ')
  if (SUPPORTED_OS[id]?.includes(version)) return undefined
  const supported = Object.entries(SUPPORTED_OS)
    .map(([k, vs]) => `${k} ${vs.join('/')}`)
    .join(', ')
  return `unsupported operating system "${os || 'unknown (no /etc/os-release)'}"; setup supports ${supported}. Nothing was changed.`
}

export interface PlanItem {
  item: string
  status: ItemStatus
  /** Why (refused: what is in the way; otherwise what changes). */
  why?: string
  file?: ManagedFile
  /** The file exists (a diff is against it). */
  exists?: boolean
}

/** A managed file's status: from its content's sum, and the header's sum against its body (a hand edit). */
export function fileStatus(m: ManagedFile, st: FileState, overwrite: boolean): PlanItem {
  const item = { item: m.item, file: m, exists: st.state === 'present' }
  if (st.state === 'absent') return { ...item, status: 'created' }
  if (st.state === 'other')
    return {
      ...item,
      status: 'refused',
      why: `${m.path} is not a regular file (a link, a directory…): remove it`
    }
  const sameMode = Number.parseInt(st.mode, 8) === Number.parseInt(m.mode, 8) && st.owner === m.owner
  if (st.sha === f.sha256(m.content))
    return sameMode
      ? { ...item, status: 'unchanged' }
      : {
          ...item,
          status: 'changed',
          why: `mode or owner (${st.mode} ${st.owner}, expected ${m.mode} ${m.owner})`
        }
  const inWay = !st.stamp
    ? `${m.path} was not written by django-deploy`
    : st.stamp !== st.body
      ? `${m.path} was edited by hand since setup wrote it`
      : undefined
  if (inWay && !overwrite)
    return { ...item, status: 'refused', why: `${inWay}; set setup-overwrite: true to replace it` }
  return { ...item, status: 'changed', why: inWay ? `${inWay} (replaced: setup-overwrite)` : undefined }
}

/** Every item of the host and its status, in the order setup applies them. */
export function planHost(d: Desired, facts: HostFacts): PlanItem[] {
  const ow = d.s.overwrite
  const items: PlanItem[] = [
    d.packages.some(p => facts.missing.includes(p))
      ? { item: 'packages', status: 'created', why: `install ${facts.missing.join(' ')}` }
      : { item: 'packages', status: 'unchanged' },
    { item: `user ${d.user}`, status: facts.user ? 'unchanged' : 'created' },
    {
      item: 'authorized_keys',
      status: facts.key ? 'unchanged' : facts.user ? 'changed' : 'created',
      why: facts.key ? undefined : 'add the public half of ssh-key'
    },
    { item: `layout ${d.deployPath}`, status: facts.layout ? 'unchanged' : 'created' }
  ]
  const states = facts.files
  const all = inspected(d)
  d.files.forEach((m, i) => items.push(fileStatus(m, states[i], ow)))
  const socket = fileStatus(d.socket, states[all.length - 3], ow)
  const service = fileStatus(d.service, states[all.length - 2], ow)
  items.push(socket, service)
  if (socket.status === 'unchanged' && service.status === 'unchanged' && !facts.enabled)
    items.push({
      item: 'units enabled',
      status: 'changed',
      why: `enable ${d.s.app}.socket and ${d.s.app}.service`
    })
  if (d.s.tls === 'acme') items.push(certificateItem(d, facts))
  const site = fileStatus(d.site, states[all.length - 1], ow)
  if (facts.siteLink === 'file')
    items.push({
      ...site,
      status: ow ? 'changed' : 'refused',
      why: `${d.siteLink.link} is a file, not django-deploy's link${ow ? ' (replaced: setup-overwrite)' : '; set setup-overwrite: true to replace it'}`
    })
  else if (site.status === 'unchanged' && facts.siteLink !== 'yes')
    items.push({ ...site, status: 'changed', why: `link ${d.siteLink.link}` })
  else items.push(site)
  return items
}

function certificateItem(d: Desired, facts: HostFacts): PlanItem {
  const c = facts.cert
  const want = [...d.s.domains].sort().join(' ')
  if (!c) return { item: 'certificate', status: 'created', why: `certbot for ${d.s.domains.join(', ')}` }
  const have = [...c.domains].sort().join(' ')
  if (have !== want)
    return { item: 'certificate', status: 'changed', why: `domains ${have || '(none)'} → ${want}` }
  if (c.server !== d.s.acmeDirectory)
    return {
      item: 'certificate',
      status: 'changed',
      why: `ACME directory ${c.server ?? '?'} → ${d.s.acmeDirectory}`
    }
  return { item: 'certificate', status: 'unchanged' }
}

const changes = (i: PlanItem): boolean => i.status === 'created' || i.status === 'changed'

/** The steps that apply the plan (nothing for unchanged items; nothing at all when an item is refused). */
export function setupSteps(d: Desired, items: PlanItem[], facts: HostFacts, keyLine: string): Step[] {
  const s = d.s
  const by = (name: string): PlanItem | undefined => items.find(i => i.item === name)
  const steps: Step[] = []
  if (changes(by('packages')!)) steps.push({ name: 'packages', script: r.installPackages(facts.missing) })
  if (changes(by(`user ${d.user}`)!)) steps.push({ name: 'user', script: r.createUser(d.user) })
  if (changes(by('authorized_keys')!))
    steps.push({ name: 'authorized-keys', script: r.authorizeKey(d.user, keyLine) })
  if (changes(by(`layout ${d.deployPath}`)!))
    steps.push({ name: 'layout', script: r.makeLayout(d.user, d.deployPath) })
  for (const m of d.files) {
    if (!changes(by(m.item)!)) continue
    const reload = m.path.startsWith(`${f.unitDir}/`) ? ['systemctl daemon-reload'] : []
    steps.push({ name: m.item, script: [r.installFile(m), ...reload].join('\n'), input: m.content })
  }
  const socket = by(d.socket.item)!
  const service = by(d.service.item)!
  if (changes(socket) || changes(service))
    steps.push({
      name: 'units',
      script: r.installUnits(s.app, d.deployPath, { socket: changes(socket), service: changes(service) }),
      input: r.unitsInput(d.socket.content, d.service.content)
    })
  else if (by('units enabled')) steps.push({ name: 'units', script: r.enableUnits(s.app) })
  const site = items[items.length - 1]
  const siteStep = (content: string, name = 'nginx site'): Step => ({
    name,
    script: r.installSite(d.siteLink.target, d.siteLink.link),
    input: content
  })
  const cert = by('certificate')
  if (cert && changes(cert)) {
    const spec = {
      app: s.app,
      domains: s.domains,
      directory: s.acmeDirectory,
      email: s.acmeEmail,
      webroot: f.ACME_WEBROOT,
      caBundle: s.acmeCaCertificate ? `${f.tlsDir(s.app)}/acme-ca.pem` : undefined
    }
    // Without a certificate the final site cannot pass nginx -t: an HTTP-only site serves the challenge first.
    if (!facts.cert)
      steps.push(siteStep(f.nginxSite(s, d.deployPath, 'http'), 'nginx site (http, for the challenge)'))
    else if (changes(site)) steps.push(siteStep(site.file!.content))
    steps.push({ name: 'certificate', script: `${r.certbot(spec)}\nsystemctl reload nginx` })
    if (!facts.cert) steps.push(siteStep(site.file!.content))
  } else if (changes(site)) steps.push(siteStep(site.file!.content))
  return steps
}

/** The steps as the dry run prints them (file contents are on stdin: each shows as its diff, a secret not at all). */
export function renderSteps(steps: Step[]): string[] {
  return steps.map(s =>
    s.input === undefined
      ? renderStep(s)
      : `# ${s.name} (its new content on stdin: see its diff)\n${s.script}`
  )
}

export const KEY_BLOB = (line: string): string => line.split(' ').slice(0, 2).join(' ')

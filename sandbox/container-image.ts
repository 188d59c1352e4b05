/**
 * What makes a container's root a *bare server*: its root is an overlay of this machine's own root, which other
 * tests change while it runs (users added to /etc/passwd, sudoers files, nginx sites). Before boot, the files and
 * directories that would show those changes live are replaced in the overlay's upper layer: the account files keep
 * only system accounts; /home, /root/.ssh, /etc/sudoers.d and nginx's site directories become opaque (a directory
 * removed and made again in an overlay hides the lower one). Fresh host keys, admin key and machine id.
 */
import { promises as fs } from 'node:fs'
import path from 'node:path'
import { mustExec } from './target.js'

export type HostKeyType = 'ed25519' | 'ecdsa' | 'rsa'

export interface ContainerHostKey {
  type: HostKeyType
  /** known_hosts line: `127.x.y.2 ssh-ed25519 AAAA…` (port 22: no brackets). */
  knownHosts: string
  /** `SHA256:…` */
  fingerprint: string
}

/** Accounts a bare Debian has: system ones (uid/gid < 1000) and nobody. */
const isSystemId = (id: number): boolean => id < 1000 || id === 65534

/** Keeps system accounts in passwd/group/shadow/gshadow/subuid/subgid, and only kept users as group members. */
export function filterAccounts(files: { passwd: string; group: string; shadow: string; gshadow: string }): {
  passwd: string
  group: string
  shadow: string
  gshadow: string
  users: Set<string>
} {
  const lines = (t: string): string[][] =>
    t
      .split('\n')
      .filter(l => l.trim() !== '')
      .map(l => l.split(':'))
  const join = (rows: string[][]): string => rows.map(r => r.join(':')).join('\n') + '\n'
  const passwd = lines(files.passwd).filter(r => isSystemId(Number(r[2])))
  const users = new Set(passwd.map(r => r[0]))
  const members = (list: string): string =>
    list
      .split(',')
      .filter(u => users.has(u))
      .join(',')
  const group = lines(files.group)
    .filter(r => isSystemId(Number(r[2])))
    .map(r => [r[0], r[1], r[2], members(r[3] ?? '')])
  const groups = new Set(group.map(r => r[0]))
  const shadow = lines(files.shadow).filter(r => users.has(r[0]))
  const gshadow = lines(files.gshadow)
    .filter(r => groups.has(r[0]))
    .map(r => [r[0], r[1], members(r[2] ?? ''), members(r[3] ?? '')])
  return { passwd: join(passwd), group: join(group), shadow: join(shadow), gshadow: join(gshadow), users }
}

/** Writes `content` over `file` of the merged tree in place (keeps the copied-up file's owner and mode). */
async function rewrite(root: string, file: string, content: string): Promise<void> {
  await fs.writeFile(path.join(root, file), content)
}

/** Makes `dir` of the merged tree an empty opaque directory with the lower one's mode and owner. */
async function opaque(root: string, dir: string): Promise<void> {
  const p = path.join(root, dir)
  const st = await fs.stat(p).catch(() => undefined)
  await fs.rm(p, { recursive: true, force: true })
  await fs.mkdir(p, { mode: st ? st.mode & 0o7777 : 0o755 })
  if (st) {
    await fs.chown(p, st.uid, st.gid)
    await fs.chmod(p, st.mode & 0o7777)
  }
}

/** Replaces what other tests change on this machine with what a fresh Debian server has. */
export async function makeBare(root: string, opts: { machineId: string; hostname: string }): Promise<void> {
  const read = (f: string): Promise<string> => fs.readFile(path.join(root, f), 'utf8')
  const kept = filterAccounts({
    passwd: await read('etc/passwd'),
    group: await read('etc/group'),
    shadow: await read('etc/shadow'),
    gshadow: await read('etc/gshadow')
  })
  for (const f of ['passwd', 'group', 'shadow', 'gshadow'] as const) {
    await rewrite(root, `etc/${f}`, kept[f])
    // The backups useradd leaves (passwd- …) would still name this machine's users.
    if (await fs.stat(path.join(root, `etc/${f}-`)).catch(() => undefined))
      await rewrite(root, `etc/${f}-`, kept[f])
  }
  for (const f of ['etc/subuid', 'etc/subgid', 'etc/subuid-', 'etc/subgid-']) {
    const text = await read(f).catch(() => undefined)
    if (text === undefined) continue
    const rows = text.split('\n').filter(l => kept.users.has(l.split(':')[0]))
    await rewrite(root, f, rows.length ? rows.join('\n') + '\n' : '')
  }
  const readme = await read('etc/sudoers.d/README').catch(() => undefined)
  const defaultSite = await read('etc/nginx/sites-available/default').catch(() => undefined)
  for (const d of [
    'home',
    'etc/sudoers.d',
    'etc/nginx/sites-enabled',
    'etc/nginx/sites-available',
    'etc/nginx/conf.d'
  ])
    await opaque(root, d)
  if (readme !== undefined)
    await fs.writeFile(path.join(root, 'etc/sudoers.d/README'), readme, { mode: 0o440 })
  if (defaultSite !== undefined) {
    await fs.writeFile(path.join(root, 'etc/nginx/sites-available/default'), defaultSite, { mode: 0o644 })
    await fs.symlink('/etc/nginx/sites-available/default', path.join(root, 'etc/nginx/sites-enabled/default'))
  }
  // A fresh machine id (journald, D-Bus); nspawn keeps a non-empty one.
  await rewrite(root, 'etc/machine-id', `${opts.machineId}\n`)
  await rewrite(root, 'etc/hostname', `${opts.hostname}\n`)
  // Masked at boot: PostgreSQL's units cost boot time, and its lower data directory may be a live cluster of this
  // machine. `postgres: true` unmasks them after boot with a fresh cluster (freshPostgres in container.ts).
  for (const u of ['postgresql.service', 'postgresql@.service']) {
    const link = path.join(root, 'etc/systemd/system', u)
    await fs.rm(link, { force: true })
    await fs.symlink('/dev/null', link)
  }
}

/** Fresh host keys (the machine's own are in the lower layer) and an admin key pair for root. */
export async function makeKeys(
  root: string,
  keyDir: string,
  address: string
): Promise<{ privateKey: string; publicKey: string; hostKeys: ContainerHostKey[] }> {
  const types: HostKeyType[] = ['ed25519', 'ecdsa', 'rsa']
  const hostKey = (t: HostKeyType): string => path.join(root, `etc/ssh/ssh_host_${t}_key`)
  for (const t of types) for (const f of [hostKey(t), `${hostKey(t)}.pub`]) await fs.rm(f, { force: true })
  const admin = path.join(keyDir, 'admin_ed25519')
  const gen = (t: string, f: string, comment: string): Promise<string> =>
    mustExec('/usr/bin/ssh-keygen', ['-q', '-t', t, '-N', '', '-C', comment, '-f', f])
  await Promise.all([
    ...types.map(t => gen(t, hostKey(t), `root@${address}`)),
    gen('ed25519', admin, 'sandbox-admin')
  ])
  const hostKeys: ContainerHostKey[] = []
  for (const t of types) {
    const pub = (await fs.readFile(`${hostKey(t)}.pub`, 'utf8')).trim().split(/\s+/)
    const fingerprint = (await mustExec('/usr/bin/ssh-keygen', ['-lf', `${hostKey(t)}.pub`])).split(/\s+/)[1]
    hostKeys.push({ type: t, knownHosts: `${address} ${pub[0]} ${pub[1]}`, fingerprint })
  }
  const publicKey = (await fs.readFile(`${admin}.pub`, 'utf8')).trim()
  await opaque(root, 'root/.ssh')
  await fs.chmod(path.join(root, 'root/.ssh'), 0o700)
  await fs.writeFile(path.join(root, 'root/.ssh/authorized_keys'), `${publicKey}\n`, { mode: 0o600 })
  return { privateKey: await fs.readFile(admin, 'utf8'), publicKey, hostKeys }
}

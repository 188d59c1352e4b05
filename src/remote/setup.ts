/**
 * The shell scripts of `mode: setup`, run as root (or through `sudo -n` for an administrator that is not root).
 * Every value reaches them through `q`/`words`; every file's content comes on stdin, never in the script.
 * inspect reads, never writes; each apply script changes one item and checks what it installs first (visudo,
 * systemd-analyze, nginx -t), putting the old nginx site back when the new one fails its test.
 */
import { HEADER_FIRST, HEADER_SUM } from '../setup/files.js'
import { q, words } from './quote.js'
import { script } from './shell.js'

/** What inspect reads: the OS, packages, the deploy user, the layout, each managed file and link. */
export interface InspectSpec {
  user: string
  /** `type base64` of the deploy key. */
  keyBlob: string
  deployPath: string
  packages: string[]
  app: string
  files: string[]
  /** The nginx site's link in sites-enabled and where it should point. */
  siteLink: { link: string; target: string }
  /** certbot's live certificate and renewal configuration of the app (acme). */
  certbot?: { live: string; conf: string }
}

/** Runs `body` as root: directly for root, else through passwordless sudo (stdin passes through). */
export function asRoot(admin: string, body: string): string {
  return admin === 'root' ? body : `exec sudo -n /bin/sh -c ${q(body)}`
}

export function setupInspect(s: InspectSpec): string {
  const files = s.files.flatMap((f, i) => [
    `f=${q(f)}`,
    `if [ -L "$f" ] || { [ -e "$f" ] && [ ! -f "$f" ]; }; then echo "file=${i} other"`,
    'elif [ -f "$f" ]; then',
    '  full=$(sha256sum < "$f" | cut -c1-64)',
    `  stamp=$(sed -n 's/^${HEADER_SUM}\\([0-9a-f]\\{64\\}\\).*/\\1/p' "$f" | head -n 1)`,
    `  body=$({ grep -v -e ${q(`^${HEADER_FIRST}`)} -e ${q(`^${HEADER_SUM}`)} "$f" || true; } | sha256sum | cut -c1-64)`,
    `  echo "file=${i} present $full \${stamp:--} $body $(stat -c '%a %U %G' "$f")"`,
    `else echo "file=${i} absent"; fi`
  ])
  const [type, blob] = s.keyBlob.split(' ')
  return script(
    'set +e',
    `os_id=$(sed -n 's/^ID=//p' /etc/os-release 2>/dev/null | tr -d '"')`,
    `os_version=$(sed -n 's/^VERSION_ID=//p' /etc/os-release 2>/dev/null | tr -d '"')`,
    'echo "os=$os_id $os_version"',
    `for p in ${words(...s.packages)}; do dpkg-query -W -f='\${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "missing=$p"; done`,
    `user=${q(s.user)}`,
    'home=$(getent passwd "$user" | cut -d: -f6)',
    'if [ -n "$home" ]; then echo user=yes',
    `  awk -v t=${q(type)} -v k=${q(blob)} '{ for (i = 1; i < NF; i++) if ($i == t && $(i+1) == k) f = 1 } END { exit !f }' "$home/.ssh/authorized_keys" 2>/dev/null && echo key=yes`,
    'fi',
    `dp=${q(s.deployPath)}`,
    '[ -d "$dp" ] && [ -d "$dp/shared/media" ] && [ "$(stat -c %U "$dp")" = "$user" ] && [ "$(stat -c %U "$dp/shared")" = "$user" ] && echo layout=ok',
    '[ -e "$dp/current" ] && echo current=yes',
    `systemctl is-enabled -q ${q(`${s.app}.socket`)} 2>/dev/null && systemctl is-enabled -q ${q(`${s.app}.service`)} 2>/dev/null && echo enabled=yes`,
    `link=${q(s.siteLink.link)}`,
    `if [ -L "$link" ]; then [ "$(readlink "$link")" = ${q(s.siteLink.target)} ] && echo site-link=yes || echo site-link=other`,
    'elif [ -e "$link" ]; then echo site-link=file; fi',
    ...(s.certbot
      ? [
          `if [ -f ${q(s.certbot.live)} ] && [ -f ${q(s.certbot.conf)} ]; then`,
          `  sed -n 's/^server = /cert-server=/p' ${q(s.certbot.conf)}`,
          `  sed -n '/^\\[\\[webroot_map\\]\\]/,/^\\[/ s/^\\([^[ ][^ ]*\\) = .*/cert-domain=\\1/p' ${q(s.certbot.conf)}`,
          'fi'
        ]
      : []),
    ...files,
    'exit 0'
  )
}

/** The unified diff of `path` (or nothing, for a file not there) against the new content on stdin. */
export function setupDiff(path: string, exists: boolean): string {
  return script(
    `diff -u --label ${q(exists ? path : '/dev/null')} --label ${q(`${path} (new)`)} ${q(exists ? path : '/dev/null')} - || [ $? -eq 1 ]`
  )
}

export function installPackages(packages: string[]): string {
  return script(
    'export DEBIAN_FRONTEND=noninteractive',
    'apt-get update -q',
    `apt-get install -y -q --no-install-recommends ${words(...packages)}`
  )
}

/** The deploy user (unlocked for key logins: useradd leaves it locked, which sshd refuses without PAM). */
export function createUser(user: string): string {
  return script(`useradd --create-home --shell /bin/bash ${q(user)}`, `usermod -p '*' ${q(user)}`)
}

/** Adds the deploy key's line to the user's authorized_keys (other keys stay). */
export function authorizeKey(user: string, line: string): string {
  return script(
    `user=${q(user)}`,
    'home=$(getent passwd "$user" | cut -d: -f6)',
    'group=$(id -gn "$user")',
    'install -d -m 0700 -o "$user" -g "$group" "$home/.ssh"',
    'f="$home/.ssh/authorized_keys"',
    '[ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || echo >> "$f"',
    `printf '%s\\n' ${q(line)} >> "$f"`,
    'chown "$user:$group" "$f"',
    'chmod 0600 "$f"'
  )
}

/** deploy-path, shared/ and shared/media/, owned by the deploy user (nginx reads static and media from there). */
export function makeLayout(user: string, deployPath: string): string {
  return script(
    `user=${q(user)}`,
    'group=$(id -gn "$user")',
    `dp=${q(deployPath)}`,
    'install -d -m 0755 "$(dirname "$dp")"',
    'install -d -m 0755 -o "$user" -g "$group" "$dp" "$dp/shared" "$dp/shared/media"'
  )
}

export interface FileSpec {
  path: string
  /** Octal, e.g. 0644. */
  mode: string
  owner: string
  /** A command checking the new file first; `$new` names it. */
  check?: string
}

/** Installs one file from stdin: written beside it, checked, then renamed over it (never half-written). */
export function installFile(f: FileSpec): string {
  return script(
    `path=${q(f.path)}`,
    'dir=$(dirname "$path")',
    '[ -d "$dir" ] || install -d -m 0755 "$dir"',
    'new=$(mktemp "$dir/.django-deploy.XXXXXX")',
    `trap 'rm -f "$new"' EXIT`,
    'cat > "$new"',
    `chmod ${q(f.mode)} "$new"`,
    `chown ${q(f.owner)}: "$new"`,
    ...(f.check ? [f.check] : []),
    'mv -f "$new" "$path"',
    'trap - EXIT'
  )
}

/** The sudoers check for installFile. */
export const VISUDO = 'visudo -cf "$new"'

/**
 * Installs the socket and service units from stdin (`unitsInput`: each in base64 on a line), after
 * `systemd-analyze verify` of both (the only finding allowed: the release's Python is not there yet, before the
 * first deploy), then enables them. Started only once a release exists (`current`): then changed units restart
 * the service (its socket holds the requests meanwhile) and a stopped service starts; when the new units do not
 * start, the old ones are put back and started again.
 */
export function installUnits(
  app: string,
  deployPath: string,
  changed: { socket: boolean; service: boolean },
  unitDir = '/etc/systemd/system'
): string {
  const socket = `${unitDir}/${app}.socket`
  const service = `${unitDir}/${app}.service`
  const missing = `${app}.service: Command ${deployPath}/current/.venv/bin/python is not executable: No such file or directory`
  return script(
    `app=${q(app)}`,
    'tmp=$(mktemp -d)',
    `trap 'rm -rf "$tmp"' EXIT`,
    'IFS= read -r socket_b64; IFS= read -r service_b64',
    'printf %s "$socket_b64" | base64 -d > "$tmp/$app.socket"',
    'printf %s "$service_b64" | base64 -d > "$tmp/$app.service"',
    'out=$(cd "$tmp" && systemd-analyze verify "./$app.socket" "./$app.service" 2>&1) || true',
    // What verify says of other units (a distribution's own, loaded as dependencies) is not this setup's to judge.
    `left=$(printf '%s\\n' "$out" | grep -F -e "$app.socket" -e "$app.service" | grep -v -x -F -e ${q(missing)} || true)`,
    'if [ -n "$left" ]; then printf \'%s\\n\' "$left" >&2; echo "systemd-analyze verify refused the units: nothing installed" >&2; exit 1; fi',
    'chmod 0644 "$tmp/$app.socket" "$tmp/$app.service"',
    'mkdir "$tmp/old"',
    `for u in ${q(socket)} ${q(service)}; do [ ! -f "$u" ] || cp -p "$u" "$tmp/old/"; done`,
    `put() { for kind in socket service; do f=${q(unitDir)}/"$app.$kind"; cp "$1/$app.$kind" "$f.django-deploy-new" && mv -f "$f.django-deploy-new" "$f"; done; }`,
    'put "$tmp"',
    'systemctl daemon-reload',
    'systemctl enable -q "$app.socket" "$app.service"',
    `if [ ! -e ${q(`${deployPath}/current`)} ]; then`,
    '  echo "$app units installed and enabled; the first deploy (gunicorn-service: $app) starts them"',
    '  exit 0',
    'fi',
    changed.socket
      ? 'restart() { systemctl restart "$app.socket" "$app.service"; }'
      : changed.service
        ? 'restart() { systemctl restart "$app.service"; }'
        : 'restart() { systemctl start "$app.socket" "$app.service"; }',
    'if restart; then echo "$app.socket and $app.service running"; exit 0; fi',
    // The new units do not run: the old ones go back and run again (a first install has none to put back).
    'if [ -f "$tmp/old/$app.service" ] && [ -f "$tmp/old/$app.socket" ]; then',
    '  put "$tmp/old"; systemctl daemon-reload; restart || true',
    '  echo "$app did not start with the new units: the old units are back and restarted" >&2',
    'else echo "$app did not start with the new units" >&2; fi',
    'exit 1'
  )
}

/** installUnits' stdin. */
export function unitsInput(socket: string, service: string): string {
  return `${Buffer.from(socket).toString('base64')}\n${Buffer.from(service).toString('base64')}\n`
}

/** Enables the units alone (files unchanged, not enabled). */
export function enableUnits(app: string): string {
  return script(`systemctl enable -q ${q(`${app}.socket`)} ${q(`${app}.service`)}`)
}

/**
 * Installs the nginx site from stdin and links it into sites-enabled; `nginx -t` decides: when it fails, the old
 * site (and link) are put back and nginx is not reloaded, so it serves what it served.
 */
export function installSite(available: string, enabled: string): string {
  return script(
    `site=${q(available)}`,
    `link=${q(enabled)}`,
    'dir=$(dirname "$site")',
    'new=$(mktemp "$dir/.django-deploy.XXXXXX")',
    'old=$(mktemp "$dir/.django-deploy-old.XXXXXX")',
    `trap 'rm -f "$new" "$old"' EXIT`,
    'cat > "$new"',
    'chmod 0644 "$new"',
    'had=no; [ -f "$site" ] && cp -p "$site" "$old" && had=yes',
    'oldlink=$(readlink "$link" 2>/dev/null || true)',
    'mv -f "$new" "$site"',
    '[ "$oldlink" = "$site" ] || ln -sfn "$site" "$link"',
    'if ! out=$(nginx -t 2>&1); then',
    '  printf \'%s\\n\' "$out" >&2',
    '  if [ $had = yes ]; then mv -f "$old" "$site"; else rm -f "$site"; fi',
    '  if [ -n "$oldlink" ]; then ln -sfn "$oldlink" "$link"; elif [ $had = no ] || [ -L "$link" ]; then rm -f "$link"; fi',
    '  echo "nginx -t refused the new site: the old one is back, nginx was not reloaded" >&2',
    '  exit 1',
    'fi',
    'systemctl reload-or-restart nginx',
    'echo "nginx site $site enabled, nginx reloaded"'
  )
}

export interface CertbotSpec {
  app: string
  domains: string[]
  directory: string
  email?: string
  /** REQUESTS_CA_BUNDLE for a private ACME server. */
  caBundle?: string
  webroot: string
}

/** Obtains (or re-issues) the certificate over HTTP-01, into /etc/letsencrypt/live/<app>/ (certonly: the site stays ours). */
export function certbot(c: CertbotSpec): string {
  const args = [
    'certbot',
    'certonly',
    '--non-interactive',
    '--agree-tos',
    '--webroot',
    '-w',
    c.webroot,
    '--cert-name',
    c.app,
    '--server',
    c.directory,
    '--force-renewal',
    ...(c.email ? ['--email', c.email] : ['--register-unsafely-without-email']),
    ...c.domains.flatMap(d => ['-d', d])
  ]
  return script(
    `install -d -m 0755 ${q(`${c.webroot}/.well-known/acme-challenge`)}`,
    ...(c.caBundle ? [`export REQUESTS_CA_BUNDLE=${q(c.caBundle)}`] : []),
    words(...args)
  )
}

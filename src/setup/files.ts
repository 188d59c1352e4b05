/**
 * The files `mode: setup` manages, as pure renderers: each returns the whole content, header included. The
 * header says who manages the file and carries the sha256 of the rest of it, so a later setup knows a file it
 * wrote (and may change) from one edited by hand (refused unless setup-overwrite) or one it never wrote.
 * The content is what README's server guide describes by hand (its units, sudoers line and nginx site).
 */
import { createHash } from 'node:crypto'
import type { SetupSettings } from '../settings/setup.js'

export const HEADER_FIRST = '# Managed by django-deploy '
export const HEADER_SUM = '# django-deploy-sha256: '

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** The lines of a file but its header's: what the header's sum covers (the server computes the same with grep). */
export function bodyOf(content: string): string {
  const lines = content.split('\n')
  const last = lines.pop()
  const kept = lines.filter(l => !l.startsWith(HEADER_FIRST) && !l.startsWith(HEADER_SUM))
  return kept.map(l => `${l}\n`).join('') + (last ?? '')
}

/** `body` with the header in front (after a `#!` line, which must stay first). */
export function withHeader(app: string, body: string): string {
  const shebang = body.startsWith('#!') ? body.slice(0, body.indexOf('\n') + 1) : ''
  const rest = body.slice(shebang.length)
  const header =
    `${HEADER_FIRST}(setup of app ${app}): change the action's inputs and run setup again; do not edit.\n` +
    `${HEADER_SUM}${sha256(shebang + rest)} (of the rest of this file: a hand edit makes setup refuse it)\n`
  return shebang + header + rest
}

/** Where the files of one host live; the paths the nginx site and the units name. */
export interface SetupPaths {
  app: string
  /** The deploy user. */
  user: string
  deployPath: string
}

export const unitDir = '/etc/systemd/system'
export const socketPath = (app: string): string => `/run/${app}.sock`
export const tlsDir = (app: string): string => `/etc/ssl/django-deploy/${app}`
/** Where certbot's HTTP-01 challenge files go (the site serves /.well-known/acme-challenge/ from there). */
export const ACME_WEBROOT = '/var/www/django-deploy-acme'

/** The certificate and key nginx uses: certbot's live files, or the installed pair. */
export function certPaths(s: SetupSettings): { cert: string; key: string } | undefined {
  if (s.tls === 'acme')
    return {
      cert: `/etc/letsencrypt/live/${s.app}/fullchain.pem`,
      key: `/etc/letsencrypt/live/${s.app}/privkey.pem`
    }
  if (s.tls === 'files')
    return { cert: `${tlsDir(s.app)}/fullchain.pem`, key: `${tlsDir(s.app)}/privkey.pem` }
  return undefined
}

/**
 * sudoers: exactly what a deploy with `gunicorn-service: <app>` and nginx's default commands runs as root: the
 * nginx test and reload, and reload, restart and start of the app's service (start: the first deploy, see
 * gunicorn.ts `reloadService`). Arguments must match exactly; sudo's secure_path finds these paths first.
 */
export function sudoers(p: SetupPaths): string {
  return withHeader(
    p.app,
    [
      `${p.user} ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload`,
      `${p.user} ALL=(root) NOPASSWD: /usr/bin/systemctl reload ${p.app}, /usr/bin/systemctl restart ${p.app}, /usr/bin/systemctl start ${p.app}`,
      ''
    ].join('\n')
  )
}

/**
 * The socket unit. `ConditionPathExists` on `current`: before the first release the socket is not started (at
 * boot or by setup), so nginx's first request cannot activate a service that has nothing to run and leave it in
 * systemd's start limit; the first deploy starts it (`systemctl start <app>` pulls the socket in).
 */
export function socketUnit(p: SetupPaths): string {
  return withHeader(
    p.app,
    [
      '[Unit]',
      `Description=${p.app} gunicorn socket`,
      `ConditionPathExists=${p.deployPath}/current`,
      '',
      '[Socket]',
      `ListenStream=${socketPath(p.app)}`,
      'SocketUser=root',
      'SocketMode=0666',
      '',
      '[Install]',
      'WantedBy=sockets.target',
      ''
    ].join('\n')
  )
}

/**
 * The service: Gunicorn from the release's virtualenv through `current` (`python -m gunicorn` works whether the
 * virtualenv has its own gunicorn or sees the system's; under systemd the deploy reloads with HUP or restarts,
 * never re-executes with USR2, so `-m` is safe here). No `--bind`: the socket unit passes its listening socket.
 */
export function serviceUnit(p: SetupPaths, wsgiModule: string): string {
  const current = `${p.deployPath}/current`
  const app = wsgiModule.includes(':') ? wsgiModule : `${wsgiModule}:application`
  return withHeader(
    p.app,
    [
      '[Unit]',
      `Description=${p.app} (gunicorn)`,
      `Requires=${p.app}.socket`,
      'After=network.target',
      `ConditionPathExists=${current}`,
      '',
      '[Service]',
      'Type=notify',
      `User=${p.user}`,
      `Group=${p.user}`,
      `WorkingDirectory=${current}`,
      `ExecStart=${current}/.venv/bin/python -m gunicorn --chdir ${current} ${app}`,
      'ExecReload=/bin/kill -HUP $MAINPID',
      'KillMode=mixed',
      'TimeoutStopSec=30',
      '',
      '[Install]',
      'WantedBy=multi-user.target',
      ''
    ].join('\n')
  )
}

const nginxVar = (app: string): string => app.replace(/-/g, '_')

/** The proxy headers; with tls off, X-Forwarded-Proto is the trusted load balancer's, else this server's scheme. */
function proxyLocation(s: SetupSettings): string[] {
  const proto = s.tls === 'off' ? `$dd_${nginxVar(s.app)}_proto` : '$scheme'
  return [
    '    location / {',
    `        proxy_pass http://${nginxVar(s.app)}_gunicorn;`,
    '        proxy_set_header Host $host;',
    '        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    `        proxy_set_header X-Forwarded-Proto ${proto};`,
    '        proxy_set_header X-Forwarded-Host $host;',
    '        proxy_redirect off;',
    '        proxy_read_timeout 60s;',
    '    }'
  ]
}

function appLocations(s: SetupSettings, deployPath: string): string[] {
  return [
    `    client_max_body_size ${s.maxBodySize};`,
    '',
    `    location ${s.staticUrl} {`,
    `        alias ${deployPath}/static/;`,
    '        expires 30d;',
    '        access_log off;',
    '    }',
    `    location ${s.mediaUrl} {`,
    `        alias ${deployPath}/shared/media/;`,
    '    }',
    ...proxyLocation(s)
  ]
}

const acmeLocation = ['    location /.well-known/acme-challenge/ {', `        root ${ACME_WEBROOT};`, '    }']

/**
 * The nginx site `<app>`. `stage: 'http'` is the HTTP-only site that serves certbot's challenge before the
 * certificate exists (acme, first issue); the final site redirects HTTP to HTTPS (but the challenge, for
 * renewals) and serves the app over TLS, or (tls off) serves it over HTTP behind the load balancer.
 */
export function nginxSite(s: SetupSettings, deployPath: string, stage: 'final' | 'http' = 'final'): string {
  const v = nginxVar(s.app)
  const names = s.domains.join(' ')
  const upstream = [
    `upstream ${v}_gunicorn {`,
    `    server unix:${socketPath(s.app)} fail_timeout=0;`,
    '}',
    ''
  ]
  const listen80 = ['    listen 80;', '    listen [::]:80;', `    server_name ${names};`]
  const lines = [...upstream]
  if (s.tls === 'off') {
    lines.push(
      '# X-Forwarded-Proto is believed from the load balancers given in trusted-proxies only.',
      `geo $dd_${v}_trusted {`,
      '    default 0;',
      ...s.trustedProxies.map(a => `    ${a} 1;`),
      '}',
      `map "$dd_${v}_trusted:$http_x_forwarded_proto" $dd_${v}_proto {`,
      '    default $scheme;',
      '    "1:https" https;',
      '    "1:http" http;',
      '}',
      '',
      'server {',
      ...listen80,
      '',
      ...s.trustedProxies.map(a => `    set_real_ip_from ${a};`),
      '    real_ip_header X-Forwarded-For;',
      '    real_ip_recursive on;',
      '',
      ...appLocations(s, deployPath),
      '}',
      ''
    )
    return withHeader(s.app, lines.join('\n'))
  }
  if (stage === 'http') {
    lines.push(
      'server {',
      ...listen80,
      '',
      ...acmeLocation,
      '    location / {',
      '        return 503;',
      '    }',
      '}',
      ''
    )
    return withHeader(s.app, lines.join('\n'))
  }
  const cert = certPaths(s)!
  lines.push(
    'server {',
    ...listen80,
    '',
    ...(s.tls === 'acme' ? acmeLocation : []),
    '    location / {',
    '        return 301 https://$host$request_uri;',
    '    }',
    '}',
    '',
    'server {',
    '    listen 443 ssl;',
    '    listen [::]:443 ssl;',
    `    server_name ${names};`,
    '',
    `    ssl_certificate ${cert.cert};`,
    `    ssl_certificate_key ${cert.key};`,
    '    ssl_protocols TLSv1.2 TLSv1.3;',
    '',
    ...appLocations(s, deployPath),
    '}',
    ''
  )
  return withHeader(s.app, lines.join('\n'))
}

/** shared/.env from the env-file input (lines as given, a final new line added). */
export function envFile(app: string, text: string): string {
  return withHeader(app, text.endsWith('\n') ? text : `${text}\n`)
}

/** A PEM file (certificate, key, CA): OpenSSL reads past the header's comment lines to the BEGIN line. */
export function pemFile(app: string, pem: string): string {
  const t = pem.replace(/\r\n/g, '\n').trim()
  return withHeader(app, `${t}\n`)
}

/** certbot's renewals (certbot.service) trust the private ACME server's CA, as the first issue did. */
export function certbotDropIn(app: string): string {
  return withHeader(
    app,
    ['[Service]', `Environment=REQUESTS_CA_BUNDLE=${tlsDir(app)}/acme-ca.pem`, ''].join('\n')
  )
}

/** certbot's deploy hook: a renewed certificate is served once nginx reloads (only if its configuration passes). */
export function deployHook(app: string): string {
  return withHeader(
    app,
    ['#!/bin/sh', 'set -e', '/usr/sbin/nginx -t -q', '/usr/sbin/nginx -s reload', ''].join('\n')
  )
}

/**
 * Where things live on the server: every path under deploy-path, and every name inside a release or a
 * virtualenv the remote scripts agree on, is made here.
 */

/** Where things live under deploy-path on the server. */
export interface Layout {
  root: string
  releases: string
  shared: string
  current: string
  venvs: string
  lock: string
  /** Who holds the lock (the run's URL and release), for the message of a deploy that waits for it. */
  holder: string
  /** The token of the deploy that holds the lock's lease (fencing: a step runs only while it holds this). */
  lease: string
  /** Per lease token: its last renewal time and one `step-<pgid>` file per running step. */
  leases: string
  /** One line per release that went live (after its health check): `<time> live|rollback <release>`. */
  history: string
  /**
   * The static files of every kept release, at the same URLs (hard links into each release's STATIC_ROOT):
   * what nginx should serve as /static/, so a page of the previous release still finds its hashed files.
   */
  static: string
  /** Where the manifest step leaves a release's manifest and reusable paths for its upload. */
  incoming: string
  /** `<pid> <virtualenv>` of the running Gunicorn master, as the probe before the switch read it. */
  gunicornMaster: string
}

export function layout(root: string): Layout {
  return {
    root,
    releases: `${root}/releases`,
    shared: `${root}/shared`,
    current: `${root}/current`,
    venvs: `${root}/venvs`,
    lock: `${root}/.deploy.lock`,
    holder: `${root}/.deploy.lock.holder`,
    lease: `${root}/.deploy.lock.lease`,
    leases: `${root}/.deploy.lock.d`,
    history: `${root}/.deploy-history`,
    static: `${root}/static`,
    incoming: `${root}/.deploy-incoming`,
    gunicornMaster: `${root}/.gunicorn-master`
  }
}

/** Files inside a release directory. */
export const IN_RELEASE = {
  /** The commit the release was built from, written once at upload (`inspect` lists releases by it). */
  revision: 'REVISION',
  /** The link to the release's virtualenv. */
  venv: '.venv',
  /** The release's STATIC_ROOT (relative to the release), recorded once its files were linked. */
  staticRecord: '.django-deploy-static'
} as const

/** Files inside a virtualenv under venvs/. */
export const IN_VENV = {
  /** Made last: a virtualenv without it is half-built (a killed deploy) and rebuilt, never used. */
  complete: '.django-deploy-complete',
  /** What it was made of (`deps`: a basis line, then its lines). */
  deps: '.django-deploy-deps'
} as const

export const releaseDir = (l: Layout, release: string): string => `${l.releases}/${release}`

/** The directory of a lease token: its renewal time and its running steps. */
export const leaseDir = (l: Layout, token: string): string => `${l.leases}/${token}`

/**
 * Where a release whose name is already on the server (a re-deploy of an older name) is built: beside it in
 * releases/ (one file system, so `place` is a rename), under a name no release can have (release names start
 * with a letter or digit) and that `inspect` never lists. The old release stays whole until `place`.
 */
export function buildName(release: string): string {
  return `.build-${release}`
}

/** Where `place` keeps the release it replaced until the deploy succeeded (a revert puts it back). */
export const replacedName = (release: string): string => `.replaced-${release}`

/** The new `current` link, made beside it and renamed over it (see switchTo). */
export const nextCurrent = (l: Layout, release: string): string => `${l.current}.tmp-${release}`

/** The manifest and the reusable paths the manifest step keeps for the upload of `release`. */
export function incomingFiles(l: Layout, release: string): { manifest: string; reuse: string } {
  return { manifest: `${l.incoming}/${release}.manifest`, reuse: `${l.incoming}/${release}.reuse` }
}

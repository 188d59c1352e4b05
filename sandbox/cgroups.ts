/**
 * A cgroup of its own for each container. systemd-nspawn puts its container in `<its own cgroup>/payload`; started
 * from the same cgroup, two containers would share that subtree, and one container's systemd stopping
 * `system.slice/nginx.service` would kill the other's nginx too. So nspawn is started inside `dd-<id>` of every
 * mounted hierarchy systemd uses (v2 and the v1 `name=systemd` one on a hybrid machine like this one).
 */
import { existsSync, promises as fs } from 'node:fs'
import path from 'node:path'

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** The hierarchies systemd (and nspawn) track processes in, on a pure v2 or a hybrid machine. */
function hierarchies(): string[] {
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) return ['/sys/fs/cgroup']
  return ['/sys/fs/cgroup/unified', '/sys/fs/cgroup/systemd'].filter(h =>
    existsSync(path.join(h, 'cgroup.procs'))
  )
}

/** Makes `dd-<id>` in each hierarchy; returns the directories (their `cgroup.procs` take the nspawn process). */
export async function makeCgroups(id: string): Promise<string[]> {
  const dirs = hierarchies().map(h => path.join(h, `dd-${id}`))
  for (const d of dirs) await fs.mkdir(d)
  return dirs
}

/** Removes the cgroup trees, deepest first, once their processes are gone (a cgroup is removed with rmdir). */
export async function removeCgroups(dirs: string[]): Promise<void> {
  const tree = async (d: string): Promise<string[]> => {
    const entries = await fs.readdir(d, { withFileTypes: true }).catch(() => [])
    const subs = entries.filter(e => e.isDirectory()).map(e => path.join(d, e.name))
    return [...(await Promise.all(subs.map(tree))).flat(), d]
  }
  for (const top of dirs) {
    for (const d of await tree(top)) {
      for (let i = 0; ; i++) {
        try {
          await fs.rmdir(d)
          break
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code
          if (code === 'ENOENT') break
          if (code !== 'EBUSY' || i >= 40) throw new Error(`cgroup ${d}: ${(e as Error).message}`)
          await sleep(250)
        }
      }
    }
  }
}

/** PIDs in the cgroup trees (every hierarchy holds the same processes). */
export async function pidsInCgroups(dirs: string[]): Promise<number[]> {
  const found = new Set<number>()
  const walk = async (d: string): Promise<void> => {
    const procs = await fs.readFile(path.join(d, 'cgroup.procs'), 'utf8').catch(() => '')
    for (const p of procs.split('\n')) if (p) found.add(Number(p))
    const entries = await fs.readdir(d, { withFileTypes: true }).catch(() => [])
    await Promise.all(entries.filter(e => e.isDirectory()).map(e => walk(path.join(d, e.name))))
  }
  await Promise.all(dirs.map(walk))
  return [...found]
}

/**
 * SIGKILLs every process of the trees (`cgroup.kill` where the kernel has it, else each PID) and waits until they
 * have left. Returns the PIDs still there after `timeoutMs`.
 */
export async function killCgroups(dirs: string[], timeoutMs = 10_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const left = await pidsInCgroups(dirs)
    if (left.length === 0 || Date.now() > deadline) return left
    const killFile = dirs.map(d => path.join(d, 'cgroup.kill')).find(f => existsSync(f))
    if (killFile) await fs.writeFile(killFile, '1').catch(() => undefined)
    else
      for (const p of left)
        try {
          process.kill(p, 'SIGKILL')
        } catch {
          // gone
        }
    await sleep(100)
  }
}

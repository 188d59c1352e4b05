/**
 * Peak RSS of the action: polls the benchmark's child `node dist/index.js` and keeps the largest VmHWM (a
 * high-water mark, so a late read still sees the peak; only what happens in the last poll interval can be
 * missed). Start it just before runAction(); stop() after it returns gives the peak in kB.
 */
import { promises as fs } from 'node:fs'

export function watchActionRss(): { stop: () => number | undefined } {
  let pid: number | undefined
  let peak: number | undefined
  let busy = false
  const poll = async () => {
    if (busy) return
    busy = true
    try {
      if (pid === undefined) {
        for (const name of await fs.readdir('/proc')) {
          if (!/^\d+$/.test(name)) continue
          try {
            const stat = await fs.readFile(`/proc/${name}/stat`, 'utf8')
            const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
            if (ppid !== process.pid) continue
            const cmd = await fs.readFile(`/proc/${name}/cmdline`, 'utf8')
            if (cmd.includes('dist/index.js')) pid = Number(name)
          } catch {
            // raced with exit
          }
        }
      }
      if (pid !== undefined) {
        const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
        const m = /^VmHWM:\s+(\d+) kB/m.exec(status)
        if (m) peak = Math.max(peak ?? 0, Number(m[1]))
      }
    } finally {
      busy = false
    }
  }
  const timer = setInterval(() => void poll(), 25)
  return {
    stop: () => {
      clearInterval(timer)
      return peak
    }
  }
}

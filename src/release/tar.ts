/**
 * Reads the tar stream `git archive --format=tar` writes, entry by entry, without buffering file data: to hash
 * the bytes of each file as git archive writes them (after export-subst, eol conversion, filters such as
 * LFS, without export-ignored files) and to pass on only some entries. Understands what git writes: ustar
 * headers, pax extended headers (`x`, for long paths and link targets) and the pax global header (`g`).
 */
import { Transform, type TransformCallback } from 'node:stream'

export interface TarEntry {
  /** Path in the archive (a directory's ends with `/`). */
  path: string
  /** ustar type flag: `0` file, `2` symlink, `5` directory, … */
  type: string
  size: number
  linkname: string
}

export interface TarOptions {
  /** False drops the entry (and its pax header) from the output. Default: keep. */
  keep?: (e: TarEntry) => boolean
  /** A chunk of the entry's data (never its padding). */
  onData?: (e: TarEntry, chunk: Buffer) => void
  /** The entry's data is complete. */
  onEntry?: (e: TarEntry) => void
}

const BLOCK = 512

function field(h: Buffer, from: number, length: number): string {
  const b = h.subarray(from, from + length)
  const end = b.indexOf(0)
  return b.subarray(0, end < 0 ? length : end).toString('utf8')
}

/** `length keyword=value\n` records of a pax header. */
function paxRecords(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {}
  let at = 0
  while (at < data.length) {
    const space = data.indexOf(0x20, at)
    const length = Number(data.subarray(at, space).toString())
    if (space < 0 || !Number.isInteger(length) || length <= 0)
      throw new Error('bad pax header in git archive output')
    const record = data.subarray(space + 1, at + length - 1).toString('utf8')
    const eq = record.indexOf('=')
    out[record.slice(0, eq)] = record.slice(eq + 1)
    at += length
  }
  return out
}

/** A pass-through of a tar stream that sees every entry and can leave some out. */
export function tarEntries(o: TarOptions = {}): Transform {
  let buffer: Buffer = Buffer.alloc(0)
  let entry: TarEntry | undefined
  let remaining = 0 // data bytes of the current entry still to come
  let padding = 0
  let emit = true
  let pax: { header: Buffer; data: Buffer[]; size: number } | undefined
  let pending: Buffer[] = [] // a pax header waiting for the entry it describes
  let overrides: Record<string, string> = {}
  let ended = false
  const header = (h: Buffer, push: (b: Buffer) => void): void => {
    if (h.every(b => b === 0)) {
      ended = true
      push(Buffer.concat([...pending, h]))
      pending = []
      return
    }
    const size = parseInt(field(h, 124, 12).trim() || '0', 8)
    const type = field(h, 156, 1) || '0'
    if (type === 'x' || type === 'g') {
      pax = { header: h, data: [], size }
      remaining = size
      padding = (BLOCK - (size % BLOCK)) % BLOCK
      return
    }
    const prefix = field(h, 345, 155)
    const name = field(h, 0, 100)
    entry = {
      path: overrides.path ?? (prefix ? `${prefix}/${name}` : name),
      type,
      size,
      linkname: overrides.linkpath ?? field(h, 157, 100)
    }
    overrides = {}
    emit = o.keep?.(entry) ?? true
    if (emit) push(Buffer.concat([...pending, h]))
    pending = []
    remaining = size
    padding = (BLOCK - (size % BLOCK)) % BLOCK
    if (remaining === 0) o.onEntry?.(entry)
  }
  // A pax header read whole: an `x` one waits for its entry (its path may be the one to leave out).
  const paxDone = (push: (b: Buffer) => void): void => {
    const all = Buffer.concat(pax!.data)
    if (field(pax!.header, 156, 1) === 'x') {
      overrides = paxRecords(all.subarray(0, pax!.size))
      pending.push(pax!.header, all)
    } else push(Buffer.concat([pax!.header, all]))
    pax = undefined
  }
  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        const out: Buffer[] = []
        const push = (b: Buffer): void => void out.push(b)
        buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk
        while (buffer.length) {
          if (ended) {
            push(buffer)
            buffer = Buffer.alloc(0)
          } else if (remaining > 0) {
            const part = buffer.subarray(0, remaining)
            buffer = buffer.subarray(part.length)
            remaining -= part.length
            if (pax) pax.data.push(part)
            else {
              o.onData?.(entry!, part)
              if (emit) push(part)
              if (remaining === 0) o.onEntry?.(entry!)
            }
            if (remaining === 0 && pax && padding === 0) paxDone(push)
          } else if (padding > 0) {
            const part = buffer.subarray(0, padding)
            buffer = buffer.subarray(part.length)
            padding -= part.length
            if (pax) pax.data.push(part)
            else if (emit) push(part)
            if (padding === 0 && pax) paxDone(push)
          } else if (buffer.length >= BLOCK) {
            const h = buffer.subarray(0, BLOCK)
            buffer = buffer.subarray(BLOCK)
            header(h, push)
            if (pax && pax.size === 0) paxDone(push)
          } else break
        }
        callback(null, out.length ? Buffer.concat(out) : undefined)
      } catch (e) {
        callback(e as Error)
      }
    }
  })
}

// ncc bundles this ESM entry into one file; ssh2 (under node-ssh) reads `__dirname`, which ESM does not define.
// This must be the first import of the entry so the global exists before ssh2's module body runs.
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const g = globalThis as { __dirname?: string }
g.__dirname ??= dirname(fileURLToPath(import.meta.url))

import './shim.js'
import './startup.js'
import { run } from './main.js'

await run()

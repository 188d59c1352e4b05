// Two projects: `unit` (pure logic, fast) and `e2e` (real Django, sshd, nginx, gunicorn started by the tests).
const common = {
  preset: 'ts-jest/presets/default-esm',
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: 'tsconfig.test.json' }] }
}

export default {
  // testTimeout is a global option: inside `projects` Jest ignores it and every test gets the 5 s default.
  // e2e tests start real Django, sshd, nginx and gunicorn on a shared 2-core machine: minutes, not seconds.
  testTimeout: 240000,
  // Two files at once even on a 2-core machine (Jest's default there is one): e2e files mostly wait on ssh, pip
  // and gunicorn, and every sandbox they start has names and ports of its own. Seen 2026-12-07: all 646 tests
  // green with two workers while four other sessions loaded the machine (load average ≈ 10).
  maxWorkers: 2,
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/__tests__/unit/**/*.test.ts'] },
    { ...common, displayName: 'e2e', testMatch: ['<rootDir>/__tests__/e2e/**/*.test.ts'] }
  ]
}

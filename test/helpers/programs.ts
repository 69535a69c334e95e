// External programs a test needs (Debian packages). Missing in CI is a failure; elsewhere the
// test is skipped with the command that installs it.

import { execFileSync } from 'node:child_process';
import type { TestContext } from 'node:test';

export function hasProgram(program: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** True if every program is there; otherwise skips `t` (or throws in CI) and returns false. */
export function requirePrograms(t: TestContext, aptPackage: string, programs: string[]): boolean {
  const missing = programs.filter((p) => !hasProgram(p));
  if (missing.length === 0) return true;
  const message = `${missing.join(', ')} not found: apt-get install ${aptPackage}`;
  if (process.env.CI === 'true') throw new Error(message);
  t.skip(message);
  return false;
}

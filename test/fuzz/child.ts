/**
 * The process that runs fuzz cases for the harness, one at a time: it gets `{id, spec}`, answers
 * `{id, outcome, ms}`. A hang or a crash here is seen by the harness (no answer in time, or the
 * process exits); an exception that escapes a case's promises is reported against the running case.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCase, type CaseSpec } from './cases';
import { runCase, type Outcome } from './run';

const dir = mkdtempSync(join(tmpdir(), 'il-fuzz-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

let current: number | null = null;

function send(id: number, outcome: Outcome, ms: number): void {
  process.send!({ id, outcome, ms });
}

/** An exception no case caught: reported against the running case (or the last one), and this process is done. */
function escaped(e: unknown): void {
  const why = `escaped the case (uncaught): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
  process.send!({ fatal: true, id: current ?? undefined, outcome: { status: 'failure', why } }, () => process.exit(3));
}
process.on('uncaughtException', escaped);
process.on('unhandledRejection', escaped);

async function selftest(what: string): Promise<Outcome> {
  if (what === 'hang') for (;;);
  if (what === 'abort') process.abort();
  if (what === 'exit') process.exit(7);
  if (what === 'throw') throw new TypeError('selftest');
  if (what === 'late-throw') setTimeout(() => Promise.reject(new Error('late')), 0);
  return { status: 'ok' };
}

process.on('message', async (m: { id: number; spec: CaseSpec }) => {
  current = m.id;
  const t0 = performance.now();
  let outcome: Outcome;
  try {
    outcome = m.spec.kind === 'selftest' ? await selftest(m.spec.what) : await runCase(makeCase(m.spec), dir);
  } catch (e) {
    outcome = {
      status: 'failure',
      why: `escaped the case: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
    };
  }
  const ms = performance.now() - t0;
  if (m.spec.kind === 'selftest' && m.spec.what === 'late-throw') await new Promise((r) => setTimeout(r, 20));
  send(m.id, outcome, ms);
  current = null;
});
process.send!({ ready: true });

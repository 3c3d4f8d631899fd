/**
 * Fuzzing in `npm test`: the harness sees what it must see, the corpus of found crashers still
 * ends as its note says, and a short run from a fixed seed (test/fuzz, `npm run fuzz` for the long
 * one) ends every case in a result or a specific error[CODE]: no hang, crash or other exception.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { specName, type CaseSpec } from '../fuzz/cases';
import { campaign, report } from '../fuzz/campaign';
import { corpus } from '../fuzz/corpus';
import { briefly, Pool } from '../fuzz/harness';

/** The short run's seed and size: fixed, so that `npm test` runs the same cases every time. */
const SEED = 20250608;
const COUNT = { csv: 1000, jsonl: 1000, onnx: 1000 } as const;

describe('fuzz harness', () => {
  const pool = new Pool({ workers: 2, timeLimitMs: 1500 });
  after(() => pool.close());

  it('tells a hang, a native abort, an exit, a stray exception and an uncaught one from a result', async () => {
    const whats = ['ok', 'hang', 'abort', 'exit', 'throw', 'late-throw', 'ok'] as const;
    const rs = await pool.runAll(whats.map((what): CaseSpec => ({ kind: 'selftest', what })));
    assert.deepEqual(
      rs.map((r) => r.result.status),
      ['ok', 'hang', 'crash', 'crash', 'failure', 'failure', 'ok'],
    );
    assert.match(briefly(rs[2].result), /SIGABRT/);
    assert.match(briefly(rs[5].result), /uncaught.*late/);
  });
});

describe('fuzz corpus: found crashers stay fixed', () => {
  const entries = corpus();
  const pool = new Pool({ workers: 2, timeLimitMs: 20000 });
  after(() => pool.close());

  it('has entries for every reader', () => {
    for (const reader of ['csv', 'jsonl', 'onnx'])
      assert.ok(
        entries.some((e) => e.reader === reader),
        `no ${reader} entry`,
      );
  });
  for (const e of entries) {
    it(`${e.reader}/${e.name} → ${e.expect}`, async () => {
      const { result, ms } = await pool.run(e.spec);
      const got = result.status === 'error' ? result.code : result.status;
      assert.equal(got, e.expect, `${e.reader}/${e.name}: ${briefly(result)}\n(found: ${e.found}; was: ${e.symptom})`);
      if (e.maxMs !== undefined)
        assert.ok(
          ms < e.maxMs,
          `${e.reader}/${e.name} took ${ms.toFixed(0)} ms, more than ${e.maxMs} (was: ${e.symptom})`,
        );
    });
  }
});

describe('fuzz: short run', () => {
  it(`ends each of ${COUNT.csv} CSV/TSV, ${COUNT.jsonl} JSONL and ${COUNT.onnx} ONNX cases of seed ${SEED} in a result or an error[CODE]`, async () => {
    const stats = [];
    for (const reader of ['csv', 'jsonl', 'onnx'] as const) {
      stats.push(
        ...(await campaign({
          seed: SEED,
          count: COUNT[reader],
          readers: [reader],
          workers: 2,
          timeLimitMs: 30000,
          confirm: false,
        })),
      );
    }
    const bad = stats.flatMap((s) => s.bad);
    const how = bad.map(
      (b) =>
        `${specName(b.spec)}: ${briefly(b.result)}\n  repeat: npm run fuzz -- --seed ${SEED} --readers ${b.spec.kind === 'gen' ? `${b.spec.reader} --from ${b.spec.index}` : ''} --count 1`,
    );
    assert.equal(bad.length, 0, `${report(stats)}\n${how.join('\n')}`);
    for (const s of stats) {
      assert.equal(s.cases, COUNT[s.reader]);
      // The generators must still reach both ends: rows read, and errors found.
      assert.ok((s.counts.get('ok') ?? 0) > 0, `${s.reader}: no case read cleanly`);
      assert.ok(
        [...s.counts.keys()].some((k) => k.startsWith('error[')),
        `${s.reader}: no case ended in an error`,
      );
    }
  });
});

/**
 * "Is the head enough here?": Spearman's ρ against scipy on a hand example with ties, the top-10
 * overlaps and the verdict on hand rankings, and explain's `agreement` on the LDS MLP and CNN
 * against test/fixtures/deep/agreement.json (scipy's Spearman of the float64 autograd references,
 * head-only against last 2, at λ = 1e-3).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { explain } from '../../src/core/explain';
import type { ExplainResult } from '../../src/core/explainShapes';
import { compareRankings, ranks, spearman } from '../../src/core/scores/agreement';
import { RowsCache } from '../../src/core/cache/store';
import { DeepEngine } from '../../src/core/model/deep';
import { DEEP_DIR, softplusModelBytes } from '../helpers/deep';

interface Side {
  head: number[];
  deeper: number[];
  overlap: number;
}
interface Reference {
  lambda: number;
  top: number;
  models: Record<
    'mlp' | 'cnn',
    { model: string; layers: string[]; rows: { testRow: number; spearman: number; helpful: Side; harmful: Side }[] }
  >;
}
const REF: Reference = JSON.parse(readFileSync(join(DEEP_DIR, 'agreement.json'), 'utf8'));

describe('Spearman and the top-k overlap', () => {
  it('ties share their mean rank; ρ equals scipy.stats.spearmanr on a hand example with ties', () => {
    assert.deepEqual(Array.from(ranks([1, 2, 2, 3, 5, 5, 5])), [1, 2.5, 2.5, 4, 6, 6, 6]);
    // scipy 1.10.1: spearmanr([1,2,2,3,5,5,5], [2,1,4,4,3,0,4]).correlation = 0.03883678186903087
    // (by hand: Σ dx·dy = 1, Σ dx² = 25.5, Σ dy² = 26 over the mean ranks; 1/√663).
    const rho = spearman([1, 2, 2, 3, 5, 5, 5], [2, 1, 4, 4, 3, 0, 4]);
    assert.ok(Math.abs(rho - 0.03883678186903087) < 1e-15, `${rho}`);
    assert.equal(spearman([3, 1, 2], [30, 10, 20]), 1);
    // Pairs with a non-finite value are left out: the same ρ as the hand example.
    assert.equal(
      spearman([1, NaN, 2, 2, 3, 5, 5, Infinity, 5], [2, 7, 1, 4, 4, 3, 0, 1, 4]),
      spearman([1, 2, 2, 3, 5, 5, 5], [2, 1, 4, 4, 3, 0, 4]),
    );
    assert.equal(spearman([3, 1, 2], [-30, -10, -20]), -1);
  });

  it('overlaps count shared rows of each sign; the verdict needs ρ ≥ 0.9 and 7 of 10 on both sides', () => {
    // 12 positive rows (helpful) and 3 negative (harmful); the deeper ranking swaps rows 0 and 11.
    const head = Float64Array.from([12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, -1, -2, -3]);
    const deeper = Float64Array.from(head);
    [deeper[0], deeper[11]] = [head[11], head[0]];
    const a = compareRankings(head, deeper, 10);
    assert.equal(a.helpful.overlap, 9);
    assert.equal(a.helpful.of, 10);
    assert.deepEqual(a.harmful, { overlap: 3, of: 3, head: [14, 13, 12], deeper: [14, 13, 12] });
    assert.ok(a.spearman < 0.9 && !a.faithful, `${a.spearman}`);
    const b = compareRankings(
      head,
      Float64Array.from(head, (v, i) => (i === 3 ? 9.5 : v)),
      10,
    );
    assert.ok(b.spearman === 1 && b.faithful);
  });
});

const dir = mkdtempSync(join(tmpdir(), 'il-agreement-'));

async function explainRow(model: string, testRow: number, extra: Partial<Parameters<typeof explain>[0]> = {}) {
  return explain({
    model,
    train: 'test/fixtures/lds/train.csv',
    test: 'test/fixtures/lds/test.csv',
    testRow,
    damping: REF.lambda,
    stability: false,
    cache: null,
    ...extra,
  });
}

/** The result's agreement against the reference row; `flip` when the result is the deeper side. */
function check(r: ExplainResult, ref: Reference['models']['mlp'], t: number) {
  const a = r.agreement;
  assert.ok(a, `no agreement; notes: ${r.notes.join(' | ')}`);
  const want = ref.rows[t];
  // The engine's float32 forward pass (onnxruntime) against the reference's float64 one: the scores
  // agree to 1e-5 (deep.test.ts), far closer than any gap in these rankings' top 10.
  assert.ok(Math.abs(a.spearman - want.spearman) < 1e-4, `ρ ${a.spearman} vs scipy ${want.spearman}`);
  for (const side of ['helpful', 'harmful'] as const) {
    assert.deepEqual(a[side].head, want[side].head, side);
    assert.deepEqual(a[side].deeper, want[side].deeper, side);
    assert.equal(a[side].overlap, want[side].overlap, side);
    assert.equal(a[side].of, REF.top);
  }
  assert.deepEqual(
    a.head.layers.map((l) => l.name),
    ref.layers.slice(0, 1),
  );
  assert.deepEqual(
    a.deeper.layers.map((l) => l.name),
    ref.layers,
  );
  assert.equal(a.damping, REF.lambda);
  assert.equal(a.faithful, a.spearman >= 0.9 && a.helpful.overlap >= 7 && a.harmful.overlap >= 7);
}

describe("explain's agreement against the fixture script's references", () => {
  for (const kind of ['mlp', 'cnn'] as const) {
    it(`${kind}, head explain: the last 2 layers' ranking compared (test rows ${REF.models[kind].rows.map((r) => r.testRow).join(', ')})`, async () => {
      const ref = REF.models[kind];
      for (const [t, row] of ref.rows.entries()) {
        const r = await explainRow(ref.model, row.testRow);
        assert.equal(r.layers.length, 1);
        assert.equal(r.model.layers, 3);
        check(r, ref, t);
        assert.ok(r.seconds.agreement > 0);
      }
    });
  }

  it('mlp, --layers 2 explain: compared against the head the same way', async () => {
    const ref = REF.models.mlp;
    const r = await explainRow(ref.model, ref.rows[0].testRow, { layers: 2 });
    assert.equal(r.layers.length, 2);
    check(r, ref, 0);
  });

  it("with the rows cache warm, the comparison reads no training row (the rows' factors are cached): the cold run's numbers", async () => {
    const ref = REF.models.cnn;
    const cache = new RowsCache(mkdtempSync(join(tmpdir(), 'il-agreement-cache-')));
    const cold = await explainRow(ref.model, ref.rows[0].testRow, { cache });
    const reads = new Map<string, number>();
    const pass = DeepEngine.prototype.pass;
    DeepEngine.prototype.pass = function (this: DeepEngine, path, ...rest) {
      reads.set(path, (reads.get(path) ?? 0) + 1);
      return pass.call(this, path, ...rest);
    };
    try {
      const warm = await explainRow(ref.model, ref.rows[0].testRow, { cache });
      assert.equal(warm.train.cache, 'hit');
      assert.deepEqual([...reads], []);
      assert.equal(warm.agreement!.spearman, cold.agreement!.spearman);
      assert.deepEqual(warm.agreement!.helpful, cold.agreement!.helpful);
      assert.deepEqual(warm.agreement!.harmful, cold.agreement!.harmful);
      check(warm, ref, 0);
      // Another test row: one more solve over the same factors.
      check(await explainRow(ref.model, ref.rows[1].testRow, { cache }), ref, 1);
      assert.deepEqual([...reads], []);
    } finally {
      DeepEngine.prototype.pass = pass;
    }
  });

  it('off with agreement: false; a note, not a failure, when the deeper path cannot run', async () => {
    const ref = REF.models.mlp;
    assert.equal((await explainRow(ref.model, 0, { agreement: false })).agreement, null);
    // Gemm → Relu → Gemm → Softplus → Gemm head: three layers, but no gradient through Softplus.
    const model = join(dir, 'softplus.onnx');
    writeFileSync(model, softplusModelBytes(true));
    const train = join(dir, 'train.csv');
    const lines = ['a,b,c,d,label'];
    for (let i = 0; i < 30; i++) lines.push(`${i % 3},${(i * 7) % 5},${i % 2},${(i * 3) % 4},${i % 2}`);
    writeFileSync(train, lines.join('\n') + '\n');
    const r = await explain({ model, train, test: train, testRow: 0, stability: false, cache: null });
    assert.equal(r.model.layers, 3);
    assert.equal(r.agreement, null);
    assert.ok(
      r.notes.some((n) => /^no head-vs-last-2 comparison: .*Softplus/.test(n)),
      r.notes.join(' | '),
    );
  });
});

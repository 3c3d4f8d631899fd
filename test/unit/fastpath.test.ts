/**
 * The fast path (onnxruntime float32/float64 products, block CG, batched per-row work) against the
 * exact float64 JS path on a mid-size synthetic problem where both can run: every score to 1e-5
 * relative (norm-wise), the flip set identical, and EK-FAC self-influence (the same method on both
 * paths) to 1e-5. The rows mix confident and uncertain predictions, with correlated ReLU features,
 * which is where float32 products are the least forgiving.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { auditScores, type HeldOut } from '../../src/core/scores/audit';
import { CancelledError } from '../../src/core/errors';
import { topRows } from '../../src/core/scores/ranking';
import { relErr } from '../helpers/stats';
import type { ForwardRows } from '../../src/core/model/engine';
import { HessianFeeder } from '../../src/core/curvature/feeder';
import { Curvature } from '../../src/core/curvature/curvature';
import { denseHessian } from '../../src/core/curvature/exact';
import {
  chooseMethods,
  explicitHessian,
  explicitHessianFrom,
  type CurvatureStore,
} from '../../src/core/curvature/policy';
import { explainScores, lossChangesAt, type ExplainScores, type TestPoint } from '../../src/core/scores/explain';
import { flipSet } from '../../src/core/scores/flip';
import { headDims, type HeadRows } from '../../src/core/task/head';
import { normal, uniform } from '../helpers/random';

/** A trained-looking head: logits of a random linear layer over correlated ReLU features, labels sampled from it (5% flipped). */
function synth(
  n: number,
  D: number,
  C: number,
  scale: number,
  seed: number,
): { rows: ForwardRows; tests: TestPoint[] } {
  const u = uniform(seed);
  const gauss = normal(u);
  const W = Float64Array.from({ length: C * D }, () => (gauss() * scale) / Math.sqrt(D));
  const b = Float64Array.from({ length: C }, () => gauss() * 0.3);
  const L = D >> 1;
  const mix = Float64Array.from({ length: D * L }, () => gauss());
  const make = (m: number) => {
    const h = new Float32Array(m * D);
    const z = new Float64Array(m * C);
    const g = new Float64Array(m * C);
    const loss = new Float64Array(m);
    const labels = new Int32Array(m);
    for (let i = 0; i < m; i++) {
      const lat = Array.from({ length: L }, () => gauss());
      for (let j = 0; j < D; j++) {
        let s = 0.3 * gauss();
        for (let l = 0; l < L; l++) s += (mix[j * L + l] * lat[l]) / Math.sqrt(L);
        h[i * D + j] = Math.max(s, 0);
      }
      let mx = -Infinity;
      for (let c = 0; c < C; c++) {
        let s = b[c];
        for (let j = 0; j < D; j++) s += W[c * D + j] * h[i * D + j];
        z[i * C + c] = s;
        mx = Math.max(mx, s);
      }
      let se = 0;
      for (let c = 0; c < C; c++) se += Math.exp(z[i * C + c] - mx);
      let r = u();
      let y = C - 1;
      for (let c = 0; c < C; c++) {
        r -= Math.exp(z[i * C + c] - mx) / se;
        if (r <= 0) {
          y = c;
          break;
        }
      }
      if (u() < 0.05) y = Math.floor(u() * C);
      labels[i] = y;
      for (let c = 0; c < C; c++) g[i * C + c] = Math.exp(z[i * C + c] - mx) / se - (c === y ? 1 : 0);
      loss[i] = Math.log(se) - (z[i * C + y] - mx);
    }
    return { h, z, g, loss, labels };
  };
  const tr = make(n);
  const te = make(3);
  const tests: TestPoint[] = [0, 1, 2].map((t) => {
    const x = new Float64Array(D + 1);
    for (let j = 0; j < D; j++) x[j] = te.h[t * D + j];
    x[D] = 1;
    return { x, g: te.g.slice(t * C, (t + 1) * C), z: te.z.slice(t * C, (t + 1) * C), label: te.labels[t] };
  });
  const rows = {
    n,
    C,
    D,
    bias: true,
    ...tr,
    lines: new Int32Array(n),
    offsets: new Float64Array(n + 1),
  } as unknown as ForwardRows;
  return { rows, tests };
}

const damping = 1e-3;
const { rows, tests } = synth(4000, 40, 8, 6, 11);
const SCORES = [
  'influence',
  'lossChangeIfRemoved',
  'lossChangeIfRemovedNewton',
  'classificationInfluence',
  'relativeInfluence',
  'selfInfluence',
] as const;

for (const hessian of ['explicit', 'matrix-free'] as const)
  describe(`fast path (${hessian} Hessian) against the exact float64 path`, () => {
    const exact: ExplainScores[] = [];
    const fast: ExplainScores[] = [];
    before(async () => {
      const ex = await Curvature.create(rows, damping, { solver: 'cholesky', selfInfluence: 'ekfac', path: 'exact' });
      const fa = await Curvature.create(rows, damping, { path: 'fast', hessian });
      assert.equal(fa.fast!.H0 !== null, hessian === 'explicit');
      try {
        for (const t of tests) {
          exact.push(await explainScores(rows, t, { damping }, ex));
          fast.push(await explainScores(rows, t, { damping }, fa));
        }
      } finally {
        await fa.release();
      }
    });

    it('uses the fast path when asked, and by default only for large problems', () => {
      assert.equal(fast[0].solver, 'cg');
      assert.equal(fast[0].selfInfluenceMethod, 'ekfac');
      assert.ok(fast[0].cgIterations! > 0);
      assert.equal(exact[0].solver, 'cholesky');
      assert.equal(chooseMethods(rows, {}).path, 'exact');
      const large = { ...rows, n: 200_000, D: 128, C: 20 };
      assert.deepEqual(chooseMethods(large, {}), { solver: 'cg', selfMethod: 'ekfac', path: 'fast' });
      assert.equal(chooseMethods(large, { solver: 'cholesky' }).path, 'exact');
      assert.equal(chooseMethods({ ...large, h: new Float64Array(0) }, {}).path, 'exact');
      assert.throws(() => chooseMethods(large, { path: 'fast', selfInfluence: 'exact' }), /fast path/);
    });

    it('agrees on every score to 1e-5 relative, for every test row', (ctx) => {
      tests.forEach((_, t) => {
        const errs: string[] = [];
        for (const k of SCORES) {
          const e = relErr(fast[t][k], exact[t][k]);
          errs.push(`${k} ${e.toExponential(1)}`);
          assert.ok(e < 1e-5, `test ${t}: ${k} differs by ${e.toExponential(2)}`);
        }
        ctx.diagnostic(`test ${t} (block-CG iterations so far: ${fast[t].cgIterations}): ${errs.join(', ')}`);
        assert.equal(fast[t].predicted, exact[t].predicted);
        assert.equal(fast[t].runnerUp, exact[t].runnerUp);
        assert.equal(fast[t].margin, exact[t].margin);
      });
    });

    it('finds the same flip set (and the synthetic problem has one)', () => {
      tests.forEach((_, t) => assert.deepEqual(fast[t].flip, exact[t].flip, `test ${t}`));
      assert.ok(
        exact.some((s) => s.flip !== null),
        'at least one test row can be flipped',
      );
    });

    it('agrees on the audit scores', async (ctx) => {
      const v = synth(500, 40, 8, 6, 11);
      const heldOut: HeldOut = { path: 'v', source: 'validation', rows: v.rows };
      const ex = await auditScores(rows, heldOut, { damping, tau: 0, solver: 'cholesky', selfInfluence: 'ekfac' });
      const fa = await auditScores(rows, heldOut, { damping, tau: 0, path: 'fast', hessian });
      for (const k of ['selfInfluence', 'heldOutInfluence', 'marginWithout', 'lossWithout', 'suspicion'] as const) {
        const e = relErr(fa[k]!, ex[k]!);
        ctx.diagnostic(`${k} ${e.toExponential(1)}`);
        assert.ok(e < 1e-5, `${k} differs by ${e.toExponential(2)}`);
      }
      assert.deepEqual(fa.predictedWithout, ex.predictedWithout);
      assert.deepEqual(fa.memorized, ex.memorized);
    });

    it('can be cancelled', async () => {
      const ctl = new AbortController();
      const stages = new Set<string>();
      await assert.rejects(
        explainScores(rows, tests[0], {
          damping,
          path: 'fast',
          hessian,
          signal: ctl.signal,
          onProgress: (stage) => {
            stages.add(stage);
            if (stage === 'solve') ctl.abort();
          },
        }),
        CancelledError,
      );
      assert.ok(stages.has(hessian === 'explicit' ? 'hessian' : 'ekfac') && stages.has('solve'));
    });
  });

describe('first-order scores alone (the damping-stability check)', () => {
  for (const opts of [
    { solver: 'cholesky', selfInfluence: 'exact', path: 'exact' },
    { path: 'fast', hessian: 'explicit' },
  ] as const)
    it(`equal the full scores' lossChangeIfRemoved at λ/10 and 10λ (${opts.path} path)`, async () => {
      const curv = await Curvature.create(rows, damping, opts);
      try {
        for (const f of [0.1, 10]) {
          const light = await curv.withDamping(damping * f, undefined, 'solves');
          const full = await curv.withDamping(damping * f);
          try {
            const want = (await explainScores(rows, tests[1], { damping: damping * f }, full)).lossChangeIfRemoved;
            const [got] = await lossChangesAt(rows, tests[1], [light]);
            const e = relErr(got, want);
            assert.ok(e < 1e-6, `×${f}: differs by ${e.toExponential(2)}`);
            assert.deepEqual(topRows(got, 10), topRows(want, 10));
          } finally {
            await light.release();
            await full.release();
          }
        }
      } finally {
        await curv.release();
      }
    });
});

describe('fast path curvature store', () => {
  it('a later run reads the saved curvature (no pass over the rows) and scores identically, at any damping', async () => {
    const saved = new Map<string, Float64Array[]>();
    const store: CurvatureStore = {
      load: async (name) => saved.get(name)?.map((a) => a.slice()) ?? null,
      save: async (name, arrays) =>
        void saved.set(
          name,
          arrays.map((a) => a.slice()),
        ),
    };
    const run = async (d: number, withStore: boolean) => {
      const stages = new Set<string>();
      const curv = await Curvature.create(rows, d, {
        path: 'fast',
        store: withStore ? store : null,
        onProgress: (s) => stages.add(s),
      });
      try {
        return { stages, scores: await explainScores(rows, tests[1], { damping: d }, curv) };
      } finally {
        await curv.release();
      }
    };
    const first = await run(damping, true);
    assert.deepEqual([...saved.keys()], ['curvature1-explicit']);
    const again = await run(damping, true);
    assert.ok(first.stages.has('hessian'));
    assert.ok(!again.stages.has('hessian') && !again.stages.has('ekfac'), [...again.stages].join());
    for (const k of SCORES) assert.deepEqual(again.scores[k], first.scores[k], k);
    // The saved statistics do not depend on the damping.
    const other = await run(4 * damping, true);
    const fresh = await run(4 * damping, false);
    assert.ok(!other.stages.has('hessian'));
    for (const k of SCORES) assert.deepEqual(other.scores[k], fresh.scores[k], k);
  });
});

describe('explicit Hessian summed in a worker thread during the forward pass', () => {
  const shape = { C: rows.C, D: rows.D, bias: rows.bias };
  /** Feeds the rows as a forward pass would: batches of fresh h and g buffers. */
  const pass = (feeder: HessianFeeder, batch: number) => {
    for (let s = 0; s < rows.n; s += batch) {
      const e = Math.min(rows.n, s + batch);
      feeder.onRows(
        (rows.h as Float32Array).slice(s * rows.D, e * rows.D),
        rows.g.slice(s * rows.C, e * rows.C),
        rows.labels.slice(s, e),
        e - s,
      );
    }
  };

  it('equals the float64 Hessian (worker and main thread sharing the rows)', async () => {
    const feeder = new HessianFeeder(shape, 0);
    try {
      pass(feeder, 300);
      const stats = await feeder.finish(rows);
      assert.ok(stats, 'the worker ran (it needs the built dist/hessian-worker.js: npm run build)');
      assert.equal(stats.n, rows.n);
      const H = denseHessian(rows, damping);
      const P = Math.sqrt(H.length);
      const mine = stats.H0.map((v, q) => v / rows.n + (q % (P + 1) === 0 ? damping : 0));
      assert.ok(relErr(mine, H) < 1e-6, `relative error ${relErr(mine, H)}`);
    } finally {
      await feeder.close();
    }
  });

  it('starts nothing below the fast path’s row count, and can be cancelled', async () => {
    const idle = new HessianFeeder(shape, rows.n + 1);
    pass(idle, 500);
    assert.equal(await idle.finish(rows), null);
    const busy = new HessianFeeder(shape, 0);
    try {
      pass(busy, 500);
      await assert.rejects(busy.finish(rows, AbortSignal.abort()), CancelledError);
    } finally {
      await busy.close();
    }
  });

  it('is planned exactly when the fast path with the explicit Hessian is chosen', () => {
    for (const head of [
      { C: 8, D: 40, bias: true },
      { C: 20, D: 128, bias: true },
      { C: 10, D: 300, bias: false },
      { C: 50, D: 100, bias: true },
    ])
      for (const opts of [
        {},
        { solver: 'cholesky' as const },
        { selfInfluence: 'exact' as const },
        { path: 'fast' as const },
        { path: 'exact' as const },
        { hessian: 'matrix-free' as const },
      ]) {
        const from = explicitHessianFrom(head, opts);
        for (const n of [10, 1000, 7000, 8000, 50_000, 2_000_000]) {
          const m = chooseMethods({ ...head, n, h: new Float32Array(0) }, opts);
          const chosen = m.path === 'fast' && explicitHessian(headDims(head).P, opts);
          assert.equal(from !== null && n >= from, chosen, `${JSON.stringify(head)} ${JSON.stringify(opts)} n=${n}`);
        }
      }
  });
});

describe('top rows', () => {
  it('match a full sort (largest first, ties by row) on random values with ties and zeros', () => {
    const u = uniform(5);
    for (let trial = 0; trial < 40; trial++) {
      const n = Math.floor(u() * 300);
      const v = Float64Array.from({ length: n }, () => Math.round((u() - 0.5) * 12) / 4);
      const top = Math.floor(u() * 20);
      const idx = Array.from(v.keys());
      const helpful = idx
        .filter((i) => v[i] > 0)
        .sort((a, b) => v[b] - v[a] || a - b)
        .slice(0, top);
      const harmful = idx
        .filter((i) => v[i] < 0)
        .sort((a, b) => v[a] - v[b] || a - b)
        .slice(0, top);
      assert.deepEqual(topRows(v, top), { helpful, harmful }, `trial ${trial}`);
    }
  });
});

describe('flip set', () => {
  it('matches the definition (sort every row, shortest prefix) on random margins with ties', () => {
    const u = uniform(3);
    for (let trial = 0; trial < 30; trial++) {
      const n = 50 + Math.floor(u() * 400);
      const C = 3 + Math.floor(u() * 4);
      const d = Float64Array.from({ length: n * C }, () => Math.round((u() - 0.6) * 20) / 10);
      const z = Float64Array.from({ length: C }, () => u() * 3);
      let predicted = 0;
      for (let c = 1; c < C; c++) if (z[c] > z[predicted]) predicted = c;
      // flipSet takes one column per competitor (every class but the predicted one, in class order).
      const others = Array.from({ length: C }, (_, c) => c).filter((c) => c !== predicted);
      const dj = Float64Array.from(
        { length: n * others.length },
        (_, q) => d[Math.floor(q / others.length) * C + others[q % others.length]],
      );
      const competitors = others.map((c) => ({ cls: c, margin: z[predicted] - z[c] }));
      assert.deepEqual(flipSet(dj, n, competitors), naiveFlipSet(d, n, C, z, predicted), `trial ${trial}`);
    }
  });
});

/** The flip set exactly as specified: per class, all rows sorted by (value, row), the shortest prefix reaching the margin. */
function naiveFlipSet(
  d: Float64Array,
  n: number,
  C: number,
  z: Float64Array,
  predicted: number,
): { rows: number[]; newClass: number } | null {
  const limit = Math.ceil(0.05 * n);
  let best: { rows: number[]; newClass: number } | null = null;
  for (let c = 0; c < C; c++) {
    if (c === predicted) continue;
    const target = -(z[predicted] - z[c]);
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => d[a * C + c] - d[b * C + c] || a - b);
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const v = d[order[k] * C + c];
      if (v >= 0) break;
      sum += v;
      if (sum <= target) {
        if (k + 1 <= limit && (!best || k + 1 < best.rows.length)) best = { rows: order.slice(0, k + 1), newClass: c };
        break;
      }
    }
  }
  return best;
}

// HeadRows must stay assignable from the synthetic rows.
const _check: HeadRows = rows;
void _check;

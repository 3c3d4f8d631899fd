/**
 * audit beyond the head (--layers): on the LDS MLP's last 2 layers with the exact GGN, every
 * per-row score against the float64 reference of scripts/fixtures/audit_deep.py
 * (test/fixtures/deep/audit_mlp_last2.json); on the head alone through the same deep path, the
 * head audit's numbers; the agreement that audit (head) reports with the last 2 layers; the
 * memorized flags against the Feldman–Zhang truth of test/fixtures/lds.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { audit } from '../../src/core/audit';
import { RowsCache } from '../../src/core/cache/store';
import { explain } from '../../src/core/explain';
import { DeepEngine } from '../../src/core/model/deep';
import { Engine } from '../../src/core/model/engine';
import { FIRST_ORDER_FLIP_LOSS, reasonsFor } from '../../src/core/scores/audit';
import { jaccard } from '../../src/core/scores/stability';
import { DEEP_DIR, decode, relError } from '../helpers/deep';
import { LDS_DIR, loadTruth, memorization } from '../helpers/lds';

const TOL = 1e-5;
const ref = JSON.parse(readFileSync(join(DEEP_DIR, 'audit_mlp_last2.json'), 'utf8')) as {
  layers: string[];
  params: number;
  heldOutLoss: number;
  heldOutAccuracy: number;
  lambdas: number[];
  selfInfluence: Record<string, unknown>;
  heldOutInfluence: Record<string, unknown>;
  suspicion: Record<string, unknown>;
  memorized: Record<string, number[]>;
};
const model = join(LDS_DIR, 'mlp', 'model.onnx');
const train = join(LDS_DIR, 'train.csv');
const heldOut = { path: join(LDS_DIR, 'validation.csv'), source: 'validation' as const };

let eng: Engine;
before(async () => {
  eng = await Engine.open(model);
});
after(async () => {
  await eng.release();
});

const flagged = (m: Uint8Array) => Array.from(m.keys()).filter((i) => m[i]);

describe('audit --layers 2 on the LDS MLP (exact GGN, float64 reference)', () => {
  for (const lambda of ref.lambdas) {
    it(`λ = ${lambda}: self-influence, held-out influence, suspicion and the memorized flags`, async () => {
      const r = await audit(
        { model, train, heldOut, damping: lambda, tau: 0, layers: 2, stability: false, cache: null },
        eng,
      );
      const s = r.scores;
      const key = String(lambda);
      assert.deepEqual(
        r.layers.map((l) => l.name),
        ref.layers,
      );
      assert.equal(r.curvature, 'exact');
      assert.deepEqual(r.headOnly, ['lossWithout', 'marginWithout']);
      assert.equal(r.agreement, null);
      const e1 = relError(s.selfInfluence, decode(ref.selfInfluence[key]));
      assert.ok(e1 <= TOL, `selfInfluence ${e1.toExponential(2)}`);
      const e2 = relError(s.heldOutInfluence!, decode(ref.heldOutInfluence[key]));
      assert.ok(e2 <= TOL, `heldOutInfluence ${e2.toExponential(2)}`);
      const e3 = relError(s.suspicion, decode(ref.suspicion[key]));
      assert.ok(e3 <= TOL, `suspicion ${e3.toExponential(2)}`);
      assert.deepEqual(flagged(s.memorized!), ref.memorized[key]);
      assert.ok(Math.abs(r.heldOutLoss! - ref.heldOutLoss) <= 1e-6 * ref.heldOutLoss);
      assert.equal(r.heldOutAccuracy, ref.heldOutAccuracy);
      for (let i = 0; i < s.n; i++) {
        assert.ok(Number.isNaN(s.lossWithout[i]) && Number.isNaN(s.marginWithout[i]));
        // The head's reasons built on the Newton step are not given; a memorized row has the first-order one.
        const codes = reasonsFor(s, r.rows, i, Infinity).map((x) => x.code);
        assert.ok(!codes.includes('SELF_FLIP') && !codes.includes('LOO_LOSS'));
        if (s.memorized![i]) assert.ok(codes.includes('SELF_FLIP_FIRST_ORDER'), `row ${i}`);
      }
    });
  }

  it('the memorized flags follow the first-order rule, and --tau relaxes its held-out condition', async () => {
    const base = { model, train, heldOut, damping: 1e-3, layers: 2, stability: false, cache: null };
    const r = await audit({ ...base, tau: 0 }, eng);
    const loose = await audit({ ...base, tau: 100 }, eng);
    const s = loose.scores;
    for (let i = 0; i < s.n; i++) {
      const first = r.rows.loss[i] + s.selfInfluence[i] / s.n;
      const want =
        s.predicted[i] === r.rows.labels[i] && first > FIRST_ORDER_FLIP_LOSS && s.heldOutInfluence![i] >= -100;
      assert.equal(s.memorized![i] === 1, want, `row ${i}`);
    }
    assert.ok(flagged(s.memorized!).length > flagged(r.scores.memorized!).length);
  });

  it('the damping-stability check beyond the head compares the suspicious and memorized sets at λ/10 and 10λ', async () => {
    const r = await audit({ model, train, heldOut, damping: 1e-3, tau: 0, layers: 2, cache: null }, eng);
    const st = r.stability!;
    assert.deepEqual(st.dampings, [1e-4, 1e-3, 1e-2]);
    assert.deepEqual(Object.keys(st.overlaps).sort(), ['memorized', 'suspicious']);
    // At 10λ the flags are the reference's at λ = 1e-2 (3 rows, all among λ's 8): Jaccard 3/8.
    assert.equal(st.overlaps.memorized[1], jaccard(ref.memorized['0.001'], ref.memorized['0.01']));
  });
});

describe('audit over the head through the deep path', () => {
  it("gives the head audit's self- and held-out influence", async () => {
    const opts = { model, train, heldOut, damping: 1e-3, tau: 0, stability: false, agreement: false, cache: null };
    const head = await audit({ ...opts, selfInfluence: 'exact' }, eng);
    // Naming the head selects it through the layers machinery: the GGN on the head is its Hessian.
    const deep = await audit({ ...opts, layers: ['/head/Gemm'] }, eng);
    assert.equal(deep.curvature, 'exact');
    assert.deepEqual(deep.headOnly, ['lossWithout', 'marginWithout']);
    // The deep path recomputes the logits in float64 from h; the head's come from onnxruntime in float32.
    const e1 = relError(deep.scores.selfInfluence, head.scores.selfInfluence);
    const e2 = relError(deep.scores.heldOutInfluence!, head.scores.heldOutInfluence!);
    assert.ok(e1 <= 1e-5 && e2 <= 1e-5, `${e1.toExponential(2)} ${e2.toExponential(2)}`);
  });
});

interface AgreementRef {
  lambda: number;
  models: Record<
    'mlp' | 'cnn',
    {
      layers: string[];
      head: { heldOutInfluence: unknown; lossWithout: unknown; suspicion: unknown; memorized: number[] };
      last2: { suspicion: unknown; memorized: number[] };
      agreement: {
        spearman: number;
        k: number;
        topOverlap: number;
        memorized: { jaccard: number; head: number; layers: number };
      };
    }
  >;
}
const agreeRef = JSON.parse(readFileSync(join(DEEP_DIR, 'audit_agreement.json'), 'utf8')) as AgreementRef;

describe("audit (head)'s agreement with the last 2 layers, against the float64 reference", () => {
  for (const kind of ['mlp', 'cnn'] as const) {
    it(`${kind}: the head's audit, the last 2 layers' and their Spearman, top-20 overlap and memorized Jaccard`, async () => {
      const want = agreeRef.models[kind];
      const path = join(LDS_DIR, kind, 'model.onnx');
      const m = kind === 'mlp' ? eng : await Engine.open(path);
      try {
        const opts = { model: path, train, heldOut, damping: agreeRef.lambda, tau: 0, stability: false, cache: null };
        const head = await audit({ ...opts, selfInfluence: 'exact' }, m);
        // The head's own audit: its leverage-corrected Newton leave-one-out step, to the reference.
        assert.equal(head.curvature, null);
        assert.deepEqual(head.headOnly, []);
        const s = head.scores;
        const errs = [
          relError(s.heldOutInfluence!, decode(want.head.heldOutInfluence)),
          relError(s.lossWithout, decode(want.head.lossWithout)),
          relError(s.suspicion, decode(want.head.suspicion)),
        ];
        assert.ok(
          errs.every((e) => e <= TOL),
          errs.map((e) => e.toExponential(2)).join(' '),
        );
        assert.deepEqual(flagged(s.memorized!), want.head.memorized);
        const a = head.agreement!;
        assert.deepEqual(
          a.layers.map((l) => l.name),
          want.layers,
        );
        assert.equal(a.curvature, 'exact');
        assert.ok(
          Math.abs(a.suspicion.spearman - want.agreement.spearman) <= 1e-6,
          `Spearman ${a.suspicion.spearman} vs ${want.agreement.spearman}`,
        );
        assert.equal(a.suspicion.k, want.agreement.k);
        assert.equal(a.suspicion.topOverlap, want.agreement.topOverlap);
        assert.deepEqual(a.memorized, want.agreement.memorized);
        assert.ok(a.seconds > 0 && head.seconds.agreement === a.seconds);
        // The last 2 layers' audit that it was compared with, on its own.
        const last2 = await audit({ ...opts, layers: 2, agreement: false }, m);
        assert.ok(relError(last2.scores.suspicion, decode(want.last2.suspicion)) <= TOL);
        assert.deepEqual(flagged(last2.scores.memorized!), want.last2.memorized);
      } finally {
        if (m !== eng) await m.release();
      }
    });
  }

  it('by default only within its budget: 2,000 rows of the bench MLP (EK-FAC over 35,476 parameters) skip it with a note', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'il-agree-'));
    const bench = join(__dirname, '../../bench/mlp_128_256_128_20.onnx');
    const lines = ['label,' + Array.from({ length: 128 }, (_, j) => `f${j}`).join(',')];
    for (let i = 0; i < 2000; i++)
      lines.push(
        `${i % 20},` + Array.from({ length: 128 }, (_, j) => (((i * 31 + j * 17) % 97) / 97).toFixed(3)).join(','),
      );
    const data = join(dir, 'train.csv');
    writeFileSync(data, lines.join('\n') + '\n');
    const m = await Engine.open(bench);
    try {
      const r = await audit(
        { model: bench, train: data, heldOut: null, damping: 1e-3, tau: 0, stability: false, cache: null },
        m,
      );
      assert.equal(r.agreement, null);
      const note = r.notes.find((x) => x.startsWith('no agreement with the last 2 layers'));
      // 2000 · Σ out·D̃·(out + D̃) = 2000 · (20·129·149 + 128·257·385) = 2.61e10 > 2e10.
      assert.match(
        note ?? '',
        /about 2\.6e\+10 multiply-adds, over the default budget of 2\.0e\+10 \(--agreement runs it anyway/,
      );
      const off = await audit(
        {
          model: bench,
          train: data,
          heldOut: null,
          damping: 1e-3,
          tau: 0,
          stability: false,
          agreement: false,
          cache: null,
        },
        m,
      );
      assert.ok(!off.notes.some((x) => x.includes('agreement')));
    } finally {
      await m.release();
    }
  });

  it('--no-agreement (agreement: false) skips it', async () => {
    const r = await audit({ model, train, heldOut, damping: 1e-3, tau: 0, stability: false, agreement: false }, eng);
    assert.equal(r.agreement, null);
    assert.equal(r.seconds.agreement, undefined);
    assert.ok(!r.notes.some((n) => n.includes('agreement')));
  });
});

describe('the rows cache beyond the head', () => {
  /** Counts the passes over each data file that DeepEngine makes (the training pass; on a warm run, the scores'). */
  function countPasses(): { counts: Map<string, number>; restore: () => void } {
    const counts = new Map<string, number>();
    const pass = DeepEngine.prototype.pass;
    DeepEngine.prototype.pass = function (this: DeepEngine, path, ...rest) {
      counts.set(path, (counts.get(path) ?? 0) + 1);
      return pass.call(this, path, ...rest);
    };
    return { counts, restore: () => void (DeepEngine.prototype.pass = pass) };
  }
  const same = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    assert.equal(a.length, b.length);
    for (let i = 0; i < a.length; i++) assert.ok(Object.is(a[i], b[i]), `row ${i}: ${a[i]} vs ${b[i]}`);
  };

  for (const curvature of ['exact', 'ekfac'] as const) {
    it(`${curvature}: a warm audit --layers 2 reads the training file only for its scores and gives bit-identical scores; other layers miss`, async () => {
      const cache = new RowsCache(mkdtempSync(join(tmpdir(), 'il-deepcache-')));
      const opts = { model, train, heldOut, damping: 1e-3, tau: 0, layers: 2, curvature, stability: false, cache };
      const spy = countPasses();
      try {
        const cold = await audit(opts, eng);
        assert.equal(cold.rows.cache, 'miss');
        assert.equal(cold.heldOut!.rows.cache, 'miss');
        // The training pass only: EK-FAC's second pass and the scores' (the rows' gradients are
        // never stored) replay its forward batches, kept in memory; and the held-out set's.
        assert.equal(spy.counts.get(train), 1);
        assert.equal(spy.counts.get(heldOut.path), 1);
        spy.counts.clear();
        const warm = await audit(opts, eng);
        // Only the scores' pass over the training rows.
        assert.deepEqual([...spy.counts], [[train, 1]]);
        assert.equal(warm.rows.cache, 'hit');
        assert.equal(warm.heldOut!.rows.cache, 'hit');
        same(warm.scores.selfInfluence, cold.scores.selfInfluence);
        same(warm.scores.heldOutInfluence!, cold.scores.heldOutInfluence!);
        same(warm.scores.suspicion, cold.scores.suspicion);
        assert.deepEqual(warm.scores.memorized, cold.scores.memorized);
        // Another layer choice is another entry.
        const three = await audit({ ...opts, layers: 3, curvature: 'ekfac' }, eng);
        assert.equal(three.rows.cache, 'miss');
        assert.ok((spy.counts.get(train) ?? 0) > 0);
      } finally {
        spy.restore();
      }
    });
  }

  it("explain --layers 2 shares audit's training entry: a warm explain passes over the training rows only for its scores", async () => {
    const cache = new RowsCache(mkdtempSync(join(tmpdir(), 'il-deepcache-')));
    const test = join(LDS_DIR, 'test.csv');
    await audit({ model, train, heldOut, damping: 1e-3, tau: 0, layers: 2, stability: false, cache }, eng);
    const spy = countPasses();
    try {
      const req = { model, train, test, testRow: 3, damping: 1e-3, layers: 2, stability: false, cache } as const;
      const warm = await explain(req, eng);
      assert.deepEqual([...spy.counts], [[train, 1]]);
      assert.equal(warm.train.cache, 'hit');
      const cold = await explain({ ...req, cache: null }, eng);
      same(warm.scores.lossChangeIfRemoved, cold.scores.lossChangeIfRemoved);
      same(warm.scores.selfInfluence, cold.scores.selfInfluence);
    } finally {
      spy.restore();
    }
  });
});

describe('memorized flags on the LDS fixtures (Feldman–Zhang truth)', () => {
  for (const kind of ['mlp', 'cnn'] as const) {
    it(`${kind}: last 2 layers, default damping: every flag confirmed (precision 1)`, async () => {
      const m = await Engine.open(join(LDS_DIR, kind, 'model.onnx'));
      try {
        const r = await audit(
          {
            model: join(LDS_DIR, kind, 'model.onnx'),
            train,
            heldOut,
            damping: 'auto',
            tau: 0,
            layers: 2,
            stability: false,
            cache: null,
          },
          m,
        );
        const got = memorization(loadTruth(kind), r.scores.memorized!);
        assert.ok(got.flagged >= 3 && got.precision === 1, JSON.stringify(got));
      } finally {
        await m.release();
      }
    });
  }
});

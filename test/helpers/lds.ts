/**
 * Scoring real, Adam-trained models against retraining (test/fixtures/lds, built by
 * scripts/fixtures/lds.py): the linear datamodeling score (LDS) of per-row loss changes, and the
 * memorized flags against the Feldman–Zhang truth. Shared by test/unit/lds.test.ts and
 * scripts/lds-report.ts (the README's table).
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { audit, type DampingOption, type HeadMode } from '../../src/core';
import { Curvature } from '../../src/core/curvature/curvature';
import { prepareHead } from '../../src/core/headfit';
import { Engine, type ForwardRows } from '../../src/core/model/engine';
import { rowsAt } from '../../src/core/refit';
import { headDims, rowInput } from '../../src/core/task/head';
import { rng } from './models';
import { spearman } from './stats';

export const LDS_DIR = resolve(__dirname, '../fixtures/lds');
export const LDS_MODELS = ['mlp', 'cnn'] as const;
export type LdsModel = (typeof LDS_MODELS)[number];

export interface Truth {
  n: number;
  M: number;
  testRows: number[];
  /** M×n membership masks. */
  subsets: Uint8Array[];
  meanLoss: number[][];
  mem: number[];
  recipe: { weightDecay: number };
}

export function loadTruth(model: LdsModel): Truth {
  const t = JSON.parse(readFileSync(join(LDS_DIR, model, 'truth.json'), 'utf8'));
  // numpy.packbits, most significant bit first.
  const subsets = (t.subsets as string[]).map((b64) => {
    const bytes = Buffer.from(b64, 'base64');
    return Uint8Array.from({ length: t.n }, (_, i) => (bytes[i >> 3] >> (7 - (i & 7))) & 1);
  });
  return { ...t, subsets };
}

/** LDS(t) = Spearman over subsets of (−Σ_{i∈S} lossChangeIfRemoved_i, actual loss), averaged over the test rows. */
export function lds(truth: Truth, lossChange: Float64Array[]): number {
  let sum = 0;
  lossChange.forEach((lc, t) => {
    const predicted = truth.subsets.map((s) => {
      let f = 0;
      for (let i = 0; i < truth.n; i++) if (s[i]) f -= lc[i];
      return f;
    });
    sum += spearman(
      predicted,
      truth.meanLoss.map((m) => m[t]),
    );
  });
  return sum / lossChange.length;
}

/** Precision and recall of the memorized flags against mem > 0.25, and how many rows are flagged. */
export function memorization(truth: Truth, flags: Uint8Array): { precision: number; recall: number; flagged: number } {
  let flagged = 0;
  let hits = 0;
  let positives = 0;
  for (let i = 0; i < truth.n; i++) {
    const pos = truth.mem[i] > 0.25;
    if (pos) positives++;
    if (flags[i]) {
      flagged++;
      if (pos) hits++;
    }
  }
  return { precision: flagged ? hits / flagged : NaN, recall: positives ? hits / positives : NaN, flagged };
}

/** An option as the user would set it: the damping (rule or value) and the head scored. */
export interface Option {
  damping: DampingOption;
  head: HeadMode;
}

/** The training rows and the truth's test rows of one model, forward-passed once. */
export interface Setup {
  engine: Engine;
  rows: ForwardRows;
  test: ForwardRows;
  truth: Truth;
  model: string;
}

export async function setup(model: LdsModel): Promise<Setup> {
  const path = join(LDS_DIR, model, 'model.onnx');
  const engine = await Engine.open(path);
  const rows = await engine.forward(join(LDS_DIR, 'train.csv'), {});
  const test = await engine.forward(join(LDS_DIR, 'test.csv'), {});
  return { engine, rows, test, truth: loadTruth(model), model: path };
}

/**
 * lossChangeIfRemoved of every training row for each truth test row under an option, as explain
 * computes it: −influence/n with influence_i = −∇L_tᵀ H⁻¹ ∇L_i, at the head and damping the option
 * gives. (One solve per test row, H⁻¹∇L_t, instead of explain's per-row Newton and self terms.)
 */
export async function optionLossChanges(s: Setup, o: Option): Promise<{ lossChange: Float64Array[]; damping: number }> {
  const prep = await prepareHead(s.engine, s.rows, o);
  const rows = prep.rows;
  const { n, C } = rows;
  const { Dt } = headDims(rows);
  // The test rows at the scored head: g_t from θ' (refit or shipped) at the same inputs.
  const at = rowsAt(s.test, prep.theta);
  const curv = await Curvature.create(rows, prep.damping.effective);
  const x = new Float64Array(Dt);
  const grads = s.truth.testRows.map((t) => {
    const v = new Float64Array(C * Dt);
    rowInput(s.test, t, x);
    for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) v[c * Dt + j] = at.g[t * C + c] * x[j];
    return v;
  });
  const U = await curv.solve(grads);
  await curv.release();
  const lossChange = U.map((u) => {
    const lc = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      rowInput(rows, i, x);
      let s2 = 0;
      for (let c = 0; c < C; c++) {
        let t = 0;
        for (let j = 0; j < Dt; j++) t += u[c * Dt + j] * x[j];
        s2 += rows.g[i * C + c] * t;
      }
      lc[i] = s2 / n; // −influence/n, influence = −uᵀ∇L_i
    }
    return lc;
  });
  return { lossChange, damping: prep.damping.damping };
}

/** The gradient dot product (no Hessian): ∇L_tᵀ∇L_i / n, at the shipped head. */
export function gradientDotLossChanges(s: Setup): Float64Array[] {
  const { n, C } = s.rows;
  const { Dt } = headDims(s.rows);
  const xt = new Float64Array(Dt);
  const xi = new Float64Array(Dt);
  return s.truth.testRows.map((t) => {
    rowInput(s.test, t, xt);
    const lc = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      rowInput(s.rows, i, xi);
      let gg = 0;
      for (let c = 0; c < C; c++) gg += s.test.g[t * C + c] * s.rows.g[i * C + c];
      let xx = 0;
      for (let j = 0; j < Dt; j++) xx += xt[j] * xi[j];
      lc[i] = (gg * xx) / n;
    }
    return lc;
  });
}

/** Random scores (seeded): their LDS must sit near 0. */
export function randomLossChanges(s: Setup, seed: number): Float64Array[] {
  const u = rng(seed);
  return s.truth.testRows.map(() => Float64Array.from({ length: s.rows.n }, () => u()));
}

/** The memorized flags of an audit under an option, with the validation set held out. */
export async function optionMemorized(s: Setup, o: Option): Promise<Uint8Array> {
  const a = await audit(
    {
      model: s.model,
      train: join(LDS_DIR, 'train.csv'),
      heldOut: { path: join(LDS_DIR, 'validation.csv'), source: 'validation' },
      damping: o.damping,
      head: o.head,
      tau: 0,
      stability: false,
    },
    s.engine,
  );
  return a.scores.memorized!;
}

/**
 * The scores of one explain: for every training row, its influence on the test loss, the
 * first-order and leverage-corrected loss change if removed, self-, relative and classification
 * influence, and the flip set. Every right-hand side lies in span{e_c ⊗ x̃_t}, so a few solves give
 * S_c = H⁻¹(e_c ⊗ x̃_t), and every score reduces to T_i[c', c] = S_c'[c,:]·x̃_i, formed one row at a
 * time (never n·P numbers at once): by the float64 exact path, or by the fast path's row pass.
 */
import { CancelledError, throwIfAborted } from '../errors';
import { dot } from '../linalg';
import { f64 } from '../ort/graph';
import { HeadFeed, overChunks, solutionDotKernel } from '../ort/kernels';
import { centerClasses, headDims, type HeadRows } from '../task/head';
import { probabilities, taskFor, type Task } from '../task/loss';
import { Curvature } from '../curvature/curvature';
import type { CurvatureOptions, SelfInfluenceMethod, SolverKind } from '../curvature/policy';
import type { FastCurvature } from '../curvature/fast';
import { flipSet, flipSetOf, type FlipSet } from './flip';
import { RowRemoval } from './removal';
import { fastRowPass } from './rowpass';

/** explain's options: the damping and how to build the curvature. */
export interface ExplainOptions extends CurvatureOptions {
  damping: number;
}

export interface TestPoint {
  /** x̃_t = [h_t; 1] (or h_t without a bias), float64. */
  x: Float64Array;
  /** g_t for the test row's label. */
  g: Float64Array;
  /** logits z_t, float64. */
  z: Float64Array;
  /** The label that g_t is taken for. */
  label: number;
}

export interface ExplainScores {
  predicted: number;
  margin: number;
  /** The runner-up class c* that defines the margin. */
  runnerUp: number;
  influence: Float64Array;
  lossChangeIfRemoved: Float64Array;
  lossChangeIfRemovedNewton: Float64Array;
  selfInfluence: Float64Array;
  relativeInfluence: Float64Array;
  classificationInfluence: Float64Array;
  flip: FlipSet | null;
  solver: SolverKind;
  selfInfluenceMethod: SelfInfluenceMethod;
  cgIterations: number | null;
  seconds: Record<string, number>;
}

/** The per-row scores of one explain, as either path fills them, and the result they make. */
class ScoreSheet {
  readonly predicted: number;
  readonly runnerUp: number;
  readonly margin: number;
  readonly influence: Float64Array;
  readonly lossChangeIfRemoved: Float64Array;
  readonly newton: Float64Array;
  readonly selfInfluence: Float64Array;
  readonly relativeInfluence: Float64Array;
  readonly classificationInfluence: Float64Array;
  /** p_t = g_t + t, for the Newton estimate's exact test loss. */
  readonly testP: Float64Array;
  /** The classes the prediction could flip to, in class order. */
  readonly competitors: { cls: number; margin: number; m: Float64Array }[];
  /** The runner-up's index among the competitors. */
  readonly runnerUpIndex: number;

  constructor(
    private readonly n: number,
    private readonly test: TestPoint,
    private readonly task: Task,
  ) {
    ({ predicted: this.predicted, runnerUp: this.runnerUp, margin: this.margin } = task.prediction(test.z));
    this.competitors = task.competitors(test.z, this.predicted);
    this.runnerUpIndex = this.competitors.findIndex((c) => c.cls === this.runnerUp);
    this.influence = new Float64Array(n);
    this.lossChangeIfRemoved = new Float64Array(n);
    this.newton = new Float64Array(n);
    this.selfInfluence = new Float64Array(n);
    this.relativeInfluence = new Float64Array(n);
    this.classificationInfluence = new Float64Array(n);
    this.testP = probabilities(test.g, Int32Array.of(test.label), 1, task.K);
  }

  /**
   * Row i: its influence, self-influence, first-order margin change (classification influence)
   * and dz, the change of the test logits under the leverage-corrected Newton step.
   */
  set(i: number, influence: number, self: number, marginChange: number, dz: Float64Array): void {
    this.influence[i] = influence;
    this.lossChangeIfRemoved[i] = -influence / this.n;
    this.classificationInfluence[i] = marginChange;
    this.selfInfluence[i] = self;
    this.relativeInfluence[i] = self > 0 ? influence / Math.sqrt(self) : 0;
    this.newton[i] = this.task.lossShift(this.testP, dz, this.test.label);
  }

  result(curv: Curvature, flip: FlipSet | null, seconds: Record<string, number>): ExplainScores {
    return {
      predicted: this.predicted,
      margin: this.margin,
      runnerUp: this.runnerUp,
      influence: this.influence,
      lossChangeIfRemoved: this.lossChangeIfRemoved,
      lossChangeIfRemovedNewton: this.newton,
      selfInfluence: this.selfInfluence,
      relativeInfluence: this.relativeInfluence,
      classificationInfluence: this.classificationInfluence,
      flip,
      solver: curv.solver,
      selfInfluenceMethod: curv.selfMethod,
      cgIterations: curv.cgIterations,
      seconds,
    };
  }
}

export async function explainScores(
  rows: HeadRows,
  test: TestPoint,
  opts: ExplainOptions,
  curvature?: Curvature,
): Promise<ExplainScores> {
  const curv = curvature ?? (await Curvature.create(rows, opts.damping, opts));
  try {
    return curv.fast
      ? await explainFast(rows, test, opts, curv, curv.fast)
      : await explainExact(rows, test, opts, curv);
  } finally {
    if (!curvature) await curv.release();
  }
}

/**
 * lossChangeIfRemoved alone at each curvature (the damping-stability check): one solve each for
 * H⁻¹∇L_t, then a single float64 ORT pass over the rows for all of them.
 */
export async function lossChangesAt(
  rows: HeadRows,
  test: TestPoint,
  curvs: Curvature[],
  signal?: AbortSignal,
): Promise<Float64Array[]> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const M = curvs.length;
  const rhs = new Float64Array(P);
  for (let c = 0; c < C; c++) for (let j = 0; j < Dt; j++) rhs[c * Dt + j] = test.g[c] * test.x[j];
  // U_m = H_m⁻¹∇L_t, stacked M·C × D̃.
  const u = new Float64Array(M * P);
  for (const [m, curv] of curvs.entries()) u.set((await curv.solve([rhs], signal))[0], m * P);
  const out = curvs.map(() => new Float64Array(n));
  const head = new HeadFeed(rows, false);
  const kernel = await solutionDotKernel(rows, M, head.type);
  try {
    const ut = f64(u, [M * C, Dt]);
    await overChunks(
      n,
      kernel,
      (start, k) => ({ ...head.chunk(start, k), g: f64(rows.g.subarray(start * C, (start + k) * C), [k, C]), u: ut }),
      (start, k, o) => {
        const d = o.out.data as Float64Array;
        // lossChangeIfRemoved = −influence/n = g_iᵀ U x̃_i / n.
        for (let r = 0; r < k; r++) for (let m = 0; m < M; m++) out[m][start + r] = d[r * M + m] / n;
      },
      signal,
    );
  } finally {
    await kernel.release();
  }
  return out;
}

async function explainExact(
  rows: HeadRows,
  test: TestPoint,
  opts: ExplainOptions,
  curv: Curvature,
): Promise<ExplainScores> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const { signal, onProgress } = opts;
  const seconds: Record<string, number> = {};

  // S[c'] = H⁻¹ (e_c' ⊗ x̃_t), each C×D̃.
  const rhs = Array.from({ length: C }, (_, c) => {
    const v = new Float64Array(P);
    v.set(test.x, c * Dt);
    return v;
  });
  const S = await curv.solve(rhs, signal, onProgress);
  Object.assign(seconds, curv.seconds);
  let t0 = performance.now();

  const sheet = new ScoreSheet(n, test, taskFor(C));
  const { competitors, runnerUpIndex } = sheet;
  const J = competitors.length;
  // First-order change of each competitor's margin if row i is removed.
  const marginChange = new Float64Array(n * J);

  const row = new RowRemoval(curv);
  const { x, g: gi } = row;
  const T = new Float64Array(C * C);
  // Y[a] = T[a,:]·g_i = (e_a ⊗ x̃_t)ᵀ H⁻¹ ∇L_i.
  const Y = new Float64Array(C);
  const dz = new Float64Array(C);
  for (let i = 0; i < n; i++) {
    if ((i & 1023) === 0) {
      throwIfAborted(signal);
      onProgress?.('scores', i, n);
    }
    row.load(i);
    for (let a = 0; a < C; a++) {
      const Sa = S[a];
      for (let c = 0; c < C; c++) T[a * C + c] = dot(x, Sa.subarray(c * Dt, (c + 1) * Dt), Dt);
    }
    for (let a = 0; a < C; a++) Y[a] = dot(T.subarray(a * C, (a + 1) * C), gi, C);
    for (let j = 0; j < J; j++) marginChange[i * J + j] = dot(competitors[j].m, Y, C) / n;
    // The Newton step moves the test logits by Δz[a] = (1/n) T[a,:]·w exactly (z is linear in θ);
    // the test loss is evaluated exactly there.
    for (let a = 0; a < C; a++) dz[a] = dot(T.subarray(a * C, (a + 1) * C), row.w, C) / n;
    sheet.set(i, -dot(test.g, Y, C), row.self, marginChange[i * J + runnerUpIndex], dz);
  }
  seconds.scores = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const flip = flipSet(marginChange, n, competitors);
  seconds.flip = (performance.now() - t0) / 1000;
  if (signal?.aborted) throw new CancelledError();
  return sheet.result(curv, flip, seconds);
}

/**
 * The fast path of explain. Only C − 1 solves are needed: with A_i 1 = 0, H(1 ⊗ v) = λ(1 ⊗ v), so
 * the class-mean part of every right-hand side is solved exactly, and every score is blind to it
 * (g_i, w_i and g_t sum to 0 over the classes, margins are differences, and the test loss is
 * invariant to a common shift of the logits). The solves are S_c = H⁻¹((e_c − 1/C) ⊗ x̃_t) for
 * c ≠ ŷ, and S_ŷ = −Σ_{c≠ŷ} S_c. One pass over the rows then gives, per row,
 * Y = T g_i and Z = T w_i (T_i[a,c] = S_a[c,:]·x̃_i), from which every score follows.
 */
async function explainFast(
  rows: HeadRows,
  test: TestPoint,
  opts: ExplainOptions,
  curv: Curvature,
  fast: FastCurvature,
): Promise<ExplainScores> {
  const { n, C } = rows;
  const { Dt, P } = headDims(rows);
  const { signal, onProgress } = opts;
  const seconds: Record<string, number> = {};
  const sheet = new ScoreSheet(n, test, taskFor(C));
  const { predicted, runnerUp, competitors } = sheet;
  const dirs = Array.from({ length: C }, (_, c) => c).filter((c) => c !== predicted);
  const rhs = dirs.map((c) => {
    const v = new Float64Array(P);
    for (let a = 0; a < C; a++) {
      const f = (a === c ? 1 : 0) - 1 / C;
      for (let j = 0; j < Dt; j++) v[a * Dt + j] = f * test.x[j];
    }
    return v;
  });
  const S = await curv.solve(rhs, signal, onProgress);
  Object.assign(seconds, curv.seconds);
  let t1 = performance.now();
  // The class-mean parts (H⁻¹ of 1 ⊗ x̃_t/C, identical for every S_c) drop out of every score.
  for (const s of S) centerClasses(s, C, Dt);

  // The margin changes are kept as the kernel's float32 Y (and Y_ŷ in float64), half the memory
  // of n×C float64; the flip set recomputes each class's column from them, identically.
  const M = dirs.length;
  const yAll = new Float32Array(n * M);
  const yPred = new Float64Array(n);
  const col = new Int32Array(C).fill(-1);
  dirs.forEach((c, m) => (col[c] = m));
  const Y = new Float64Array(C);
  const dz = new Float64Array(C);
  await fastRowPass(fast, { testS: S, signal, onProgress, stage: 'scores' }, (i, out) => {
    // Y[a] = (e_a ⊗ x̃_t)ᵀ H⁻¹ ∇L_i up to a common shift, for every class a.
    let sy = 0;
    let sz = 0;
    for (let m = 0; m < M; m++) {
      Y[dirs[m]] = out.y[m];
      dz[dirs[m]] = out.z[m] / n;
      sy += out.y[m];
      sz += out.z[m];
    }
    Y[predicted] = -sy;
    dz[predicted] = -sz / n;
    yAll.set(out.y, i * M);
    yPred[i] = -sy;
    sheet.set(i, -dot(test.g, Y, C), Math.max(out.self, 0), (Y[predicted] - Y[runnerUp]) / n, dz);
  });
  seconds.scores = (performance.now() - t1) / 1000;
  t1 = performance.now();
  const flip = flipSetOf(n, competitors, (j, out) => {
    const m = col[competitors[j].cls];
    for (let i = 0; i < n; i++) out[i] = (yPred[i] - yAll[i * M + m]) / n;
  });
  seconds.flip = (performance.now() - t1) / 1000;
  if (signal?.aborted) throw new CancelledError();
  return sheet.result(curv, flip, seconds);
}

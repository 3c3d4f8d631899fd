/**
 * Runs the augmented model over a data file in batches: the head's inputs h, the logits z
 * and, in float64 from z, the per-example loss and g = softmax(z) − onehot(y).
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import { HessianFeeder, type HessianStats } from './hessian';
import { explicitHessianFrom, type CurvatureStore, type ExplainOptions, type HeadRows } from './influence';
import { AUG, augmentModel, loadModel, type LoadedModel, type ModelInfo } from './onnx';
import type { FeatureCache } from './cache';
import { TableReader, type Batch, type TableInfo, type TableOptions, type TableSummary } from './table';

export interface ForwardRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
  lines: Int32Array;
  offsets: Float64Array;
  table: TableInfo;
  summary: TableSummary;
}

export interface RunOptions {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
  /** Reuse (and store) forward results on disk; null or absent: no cache. */
  cache?: FeatureCache | null;
  /**
   * Called with each batch's h, g and labels once they are stored (never on a cache hit); it may
   * keep or transfer h and g, which the pass no longer uses.
   */
  onRows?: (h: Float32Array, g: Float64Array, labels: Int32Array, count: number) => void;
}

export type CacheUse = 'hit' | 'miss' | 'off';

/** One loaded model with its augmented ORT session. */
export class Engine {
  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
  ) {}

  get info(): ModelInfo {
    return this.model.info;
  }

  static async open(modelPath: string): Promise<Engine> {
    const model = await loadModel(modelPath);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(augmentModel(model), { graphOptimizationLevel: 'all' });
    } catch (e) {
      const msg = (e as Error).message;
      const op = /Could not find an implementation for (\w+)/.exec(msg) ?? /(?:Unrecognized|unsupported) (?:op|operator)\S*\s+'?(\w+)/i.exec(msg);
      throw new InfluenceError(op ? 'UNSUPPORTED_OP' : 'MODEL_INVALID', `onnxruntime cannot run this model: ${msg.split('\n')[0]}`, { file: modelPath, node: op?.[1] });
    }
    return new Engine(model, session);
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** Table options implied by the model: class count and names. */
  tableOptions(opts: TableOptions): TableOptions {
    return { ...opts, numClasses: this.info.head.C, classes: opts.classes ?? this.info.classes };
  }

  private checkWidth(info: TableInfo): void {
    const { F, inputDims, inputName } = this.info;
    if (info.featureCount !== F) {
      throw new InfluenceError(
        'FEATURE_COUNT_MISMATCH',
        `the model input '${inputName}' takes ${F} features ([batch, ${inputDims.join(', ')}]) but ${info.path} has ${info.featureCount} feature columns (${describeColumns(info.featureNames)}); choose them with --features`,
        { file: info.path, line: 1 },
      );
    }
  }

  /** Runs one batch: labels < 0 (unlabelled rows) are fed as 0 and their loss and g are meaningless. */
  async runBatch(features: Float32Array, labels: Int32Array, count: number): Promise<{ h: Float32Array; z: Float64Array; loss: Float64Array; g: Float64Array }> {
    const { inputName, inputDims } = this.info;
    const input = new ort.Tensor('float32', features.subarray(0, count * this.info.F), [count, ...inputDims]);
    const lab = new BigInt64Array(count);
    for (let i = 0; i < count; i++) lab[i] = BigInt(Math.max(labels[i], 0));
    const out = await this.session.run({ [inputName]: input, [AUG.labels]: new ort.Tensor('int64', lab, [count]) });
    return {
      h: out[AUG.h].data as Float32Array,
      z: out[AUG.z].data as Float64Array,
      loss: out[AUG.loss].data as Float64Array,
      g: out[AUG.g].data as Float64Array,
    };
  }

  /**
   * Forward pass over a whole file, through the cache when one is given; `store` then keeps what
   * is computed from these rows (the curvature) beside them. Cache writes go on in the background
   * while the caller computes (the arrays are never modified): `written()` waits for them.
   */
  async forwardTable(path: string, tableOpts: TableOptions, run: RunOptions = {}): Promise<ForwardRows & { cache: CacheUse; store: CurvatureStore | null; written: () => Promise<void> }> {
    const pending: Promise<unknown>[] = [];
    const written = async () => void (await Promise.all(pending));
    if (!run.cache) return { ...(await this.forwardUncached(path, tableOpts, run)), cache: 'off', store: null, written };
    const cache = run.cache;
    const t = this.tableOptions(tableOpts);
    // Everything that changes the rows, and nothing that does not (batch size, progress).
    const key = {
      modelSha256: this.info.sha256,
      dataPath: path,
      options: { labelColumn: t.labelColumn ?? 'label', features: t.features ?? null, classes: t.classes ?? null, numClasses: t.numClasses, format: t.format ?? null, requireLabel: t.requireLabel ?? true },
    };
    const storeFor = (sha: string): CurvatureStore => ({
      load: (name, signal) => cache.loadDerived(key, name, sha, signal),
      save: async (name, arrays) => void pending.push(cache.storeDerived(key, name, sha, arrays)),
    });
    const hit = await cache.load(key, run.signal);
    if (hit) {
      this.checkWidth(hit.table);
      return { ...hit, cache: 'hit', store: storeFor(hit.summary.sha256), written };
    }
    const rows = await this.forwardUncached(path, tableOpts, run);
    pending.push(cache.store(key, rows));
    return { ...rows, cache: 'miss', store: storeFor(rows.summary.sha256), written };
  }

  /**
   * forwardTable for training rows. When the fast path's explicit Hessian will be needed for them
   * (explicitHessianFrom), it is summed in a worker thread during the pass, on the core that the
   * parse leaves idle: `explicitHessian` (null otherwise), and `hessianSeconds` waited for it after the pass.
   */
  async forwardTrain(
    path: string,
    tableOpts: TableOptions,
    run: RunOptions,
    methods: Pick<ExplainOptions, 'solver' | 'selfInfluence'>,
  ): Promise<Awaited<ReturnType<Engine['forwardTable']>> & { explicitHessian: HessianStats | null; hessianSeconds: number }> {
    const { C, D, b } = this.info.head;
    const shape = { C, D, bias: b !== null };
    const startAt = explicitHessianFrom(shape, methods);
    const feeder = startAt === null ? null : new HessianFeeder(shape, startAt);
    try {
      const rows = await this.forwardTable(path, tableOpts, { ...run, onRows: feeder?.onRows });
      const t0 = performance.now();
      const explicitHessian = feeder ? await feeder.finish(rows, run.signal, run.onProgress) : null;
      return { ...rows, explicitHessian, hessianSeconds: (performance.now() - t0) / 1000 };
    } finally {
      await feeder?.close();
    }
  }

  private async forwardUncached(path: string, tableOpts: TableOptions, run: RunOptions): Promise<ForwardRows> {
    const reader = await TableReader.open(path, this.tableOptions({ ...tableOpts, batchSize: run.batchSize ?? tableOpts.batchSize, signal: run.signal, onProgress: run.onProgress }));
    this.checkWidth(reader.info);
    const { C, D, b } = this.info.head;
    // Rows accumulate in arrays sized from the first batch's bytes per row (grown if the
    // guess falls short), so a large file is not held twice while it is assembled.
    const acc = new RowsBuilder(C, D);
    // Overlap parsing of the next batch with ORT's work on the current one.
    let pending: Promise<void> | null = null;
    for await (const batch of reader.batches()) {
      throwIfAborted(run.signal);
      if (pending) await pending;
      if (batch.start === 0 && batch.count > 0) {
        const bytesPerRow = (batch.offsets[batch.count] - batch.offsets[0]) / batch.count;
        acc.reserve(Math.ceil((reader.info.size - batch.offsets[0]) / Math.max(bytesPerRow, 1) * 1.02) + 16);
      }
      pending = this.runBatch(batch.features, batch.labels, batch.count).then((out) => {
        checkFinite(out, batch, reader.info);
        acc.append(batch, out);
        run.onRows?.(out.h, out.g, batch.labels, batch.count);
      });
    }
    if (pending) await pending;
    const summary = reader.summary();
    const rows: ForwardRows = { ...acc.finish(summary.rows, b !== null), table: reader.info, summary };
    return rows;
  }

  /**
   * Reads row `k` of a file and runs it. An unlabelled row (no label column) is explained
   * for its predicted class.
   */
  async forwardRow(path: string, k: number, tableOpts: TableOptions, run: RunOptions = {}): Promise<{ table: TableInfo; line: number; label: number; labelled: boolean; features: Float32Array; h: Float32Array; z: Float64Array; loss: number; g: Float64Array }> {
    // Only a label column the user named explicitly must exist in the test file.
    const requireLabel = tableOpts.labelColumn !== undefined;
    const reader = await TableReader.open(path, this.tableOptions({ ...tableOpts, requireLabel, signal: run.signal }));
    this.checkWidth(reader.info);
    const F = this.info.F;
    let seen = 0;
    for await (const batch of reader.batches()) {
      throwIfAborted(run.signal);
      if (k < batch.start + batch.count) {
        const r = k - batch.start;
        const features = batch.features.slice(r * F, (r + 1) * F);
        const labelled = reader.info.hasLabel;
        const one = Int32Array.of(labelled ? batch.labels[r] : 0);
        let out = await this.runBatch(features, one, 1);
        checkFinite(out, { ...batch, start: k, count: 1, lines: batch.lines.subarray(r, r + 1) }, reader.info);
        if (!labelled) {
          one[0] = argmax(out.z);
          out = await this.runBatch(features, one, 1);
        }
        return { table: reader.info, line: batch.lines[r], label: one[0], labelled, features, h: out.h, z: out.z, loss: out.loss[0], g: out.g };
      }
      seen = batch.start + batch.count;
    }
    throw new InfluenceError('ROW_OUT_OF_RANGE', `row ${k} does not exist: ${path} has ${seen} rows (0-based, header excluded)`, { file: path });
  }
}

/** Growable per-row arrays for forwardTable. */
class RowsBuilder {
  private cap = 0;
  private h = new Float32Array(0);
  private g = new Float64Array(0);
  private z = new Float64Array(0);
  private loss = new Float64Array(0);
  private labels = new Int32Array(0);
  private lines = new Int32Array(0);
  private offsets = new Float64Array(1);

  constructor(
    private readonly C: number,
    private readonly D: number,
  ) {}

  reserve(rows: number): void {
    if (rows <= this.cap) return;
    const grow = <T extends Float32Array | Float64Array | Int32Array>(a: T, width: number, make: (len: number) => T): T => {
      const b = make(rows * width + (width === 0 ? 1 : 0));
      b.set(a.subarray(0, Math.min(a.length, b.length)));
      return b;
    };
    const { C, D } = this;
    this.h = grow(this.h, D, (l) => new Float32Array(l));
    this.g = grow(this.g, C, (l) => new Float64Array(l));
    this.z = grow(this.z, C, (l) => new Float64Array(l));
    this.loss = grow(this.loss, 1, (l) => new Float64Array(l));
    this.labels = grow(this.labels, 1, (l) => new Int32Array(l));
    this.lines = grow(this.lines, 1, (l) => new Int32Array(l));
    const off = new Float64Array(rows + 1);
    off.set(this.offsets.subarray(0, Math.min(this.offsets.length, rows + 1)));
    this.offsets = off;
    this.cap = rows;
  }

  append(batch: Batch, out: { h: Float32Array; g: Float64Array; z: Float64Array; loss: Float64Array }): void {
    const s = batch.start;
    const k = batch.count;
    if (s + k > this.cap) this.reserve(Math.max(s + k, Math.ceil(this.cap * 1.5)));
    const { C, D } = this;
    this.h.set(out.h, s * D);
    this.g.set(out.g, s * C);
    this.z.set(out.z, s * C);
    this.loss.set(out.loss, s);
    this.labels.set(batch.labels.subarray(0, k), s);
    this.lines.set(batch.lines.subarray(0, k), s);
    this.offsets.set(batch.offsets.subarray(0, k + 1), s);
  }

  finish(n: number, bias: boolean) {
    const { C, D } = this;
    if (n === 0) this.reserve(0);
    return {
      n,
      C,
      D,
      bias,
      h: this.h.subarray(0, n * D),
      g: this.g.subarray(0, n * C),
      z: this.z.subarray(0, n * C),
      loss: this.loss.subarray(0, n),
      labels: this.labels.subarray(0, n),
      lines: this.lines.subarray(0, n),
      offsets: this.offsets.subarray(0, n + 1),
    };
  }
}

function argmax(z: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < z.length; c++) if (z[c] > z[best]) best = c;
  return best;
}

function describeColumns(names: string[]): string {
  return names.length <= 6 ? names.join(', ') : `${names.slice(0, 3).join(', ')}, …, ${names.slice(-2).join(', ')}`;
}

/** A NaN from the body (e.g. an overflow in the model) would poison every score: stop early. */
function checkFinite(out: { z: Float64Array; h: Float32Array }, batch: Pick<Batch, 'start' | 'count' | 'lines'>, info: TableInfo): void {
  const C = out.z.length / batch.count;
  for (let r = 0; r < batch.count; r++) {
    for (let c = 0; c < C; c++) {
      if (!Number.isFinite(out.z[r * C + c])) {
        throw new InfluenceError('MODEL_NOT_FINITE', `the model produced a non-finite logit for row ${batch.start + r}`, { file: info.path, line: batch.lines[r] });
      }
    }
  }
}

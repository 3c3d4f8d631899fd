/**
 * The forward Engine: one loaded model with its augmented ORT session, run over a data file in
 * batches. It gives the head's inputs h and logits z, and from z in float64 (task/) the per-row
 * loss and signal g = ∂L/∂z. No cache and no policy here: rows.ts composes those.
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import { TableReader, type Batch, type TableInfo, type TableOptions, type TableSummary } from '../data/table';
import type { HeadRows } from '../task/head';
import { lossAndSignal, taskFor, type Task } from '../task/loss';
import { loadModel, type LoadedModel, type ModelInfo } from './info';
import { AUG, augmentModel } from './surgery';

/** A file's rows after the forward pass: the head's view, logits, losses, and where each row is in the file. */
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
  /** Called with each batch's h, g and labels once they are stored; it may keep or transfer h and g, which the pass no longer uses. */
  onRows?: (h: Float32Array, g: Float64Array, labels: Int32Array, count: number) => void;
}

/** One loaded model with its augmented ORT session. */
export class Engine {
  /** The loss on the head's logits. */
  readonly task: Task;

  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
  ) {
    this.task = taskFor(model.info.head.C);
  }

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
    return { ...opts, numClasses: this.task.classes, classes: opts.classes ?? this.info.classes };
  }

  /** The file must give as many features as the model takes. */
  checkWidth(info: TableInfo): void {
    const { F, inputDims, inputName } = this.info;
    if (info.featureCount !== F) {
      throw new InfluenceError(
        'FEATURE_COUNT_MISMATCH',
        `the model input '${inputName}' takes ${F} features ([batch, ${inputDims.join(', ')}]) but ${info.path} has ${info.featureCount} feature columns (${describeColumns(info.featureNames)}); choose them with --features`,
        { file: info.path, line: 1 },
      );
    }
  }

  /** Runs one batch: labels < 0 (unlabelled rows) are taken as class 0 and their loss and g are meaningless. */
  async runBatch(features: Float32Array, labels: Int32Array, count: number): Promise<{ h: Float32Array; z: Float64Array; loss: Float64Array; g: Float64Array }> {
    const { inputName, inputDims, head } = this.info;
    const input = new ort.Tensor('float32', features.subarray(0, count * this.info.F), [count, ...inputDims]);
    const out = await this.session.run({ [inputName]: input });
    const z = Float64Array.from(out[AUG.z].data as Float32Array);
    const loss = new Float64Array(count);
    const g = new Float64Array(count * head.C);
    lossAndSignal(this.task, z, labels, count, loss, g);
    return { h: out[AUG.h].data as Float32Array, z, loss, g };
  }

  /**
   * Forward pass over a whole file. `run.onRows` sees each batch's h, g and labels once they are
   * stored in the result (and may keep or transfer them).
   */
  async forward(path: string, tableOpts: TableOptions, run: RunOptions = {}): Promise<ForwardRows> {
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
        const out = await this.runBatch(features, one, 1);
        checkFinite(out, { ...batch, start: k, count: 1, lines: batch.lines.subarray(r, r + 1) }, reader.info);
        if (!labelled) {
          one[0] = this.task.prediction(out.z).predicted;
          lossAndSignal(this.task, out.z, one, 1, out.loss, out.g);
        }
        return { table: reader.info, line: batch.lines[r], label: one[0], labelled, features, h: out.h, z: out.z, loss: out.loss[0], g: out.g };
      }
      seen = batch.start + batch.count;
    }
    throw new InfluenceError('ROW_OUT_OF_RANGE', `row ${k} does not exist: ${path} has ${seen} rows (0-based, header excluded)`, { file: path });
  }
}

/** Growable per-row arrays for forward(). */
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

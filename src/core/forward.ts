/**
 * Runs the augmented model over a data file in batches: the head's inputs h, the logits z
 * and, in float64 from z, the per-example loss and g = softmax(z) − onehot(y).
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import type { HeadRows } from './influence';
import { AUG, augmentModel, loadModel, type LoadedModel, type ModelInfo } from './onnx';
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
}

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

  /** Forward pass over a whole training file. */
  async forwardTable(path: string, tableOpts: TableOptions, run: RunOptions = {}): Promise<ForwardRows> {
    const reader = await TableReader.open(path, this.tableOptions({ ...tableOpts, batchSize: run.batchSize ?? tableOpts.batchSize, signal: run.signal, onProgress: run.onProgress }));
    this.checkWidth(reader.info);
    const { C, D, b } = this.info.head;
    const parts: { batch: Batch; out: Awaited<ReturnType<Engine['runBatch']>> }[] = [];
    // Overlap parsing of the next batch with ORT's work on the current one.
    let pending: Promise<void> | null = null;
    for await (const batch of reader.batches()) {
      throwIfAborted(run.signal);
      if (pending) await pending;
      pending = this.runBatch(batch.features, batch.labels, batch.count).then((out) => {
        checkFinite(out, batch, reader.info);
        parts.push({ batch, out });
      });
    }
    if (pending) await pending;
    const summary = reader.summary();
    const n = summary.rows;
    const rows: ForwardRows = {
      n,
      C,
      D,
      bias: b !== null,
      h: new Float32Array(n * D),
      g: new Float64Array(n * C),
      z: new Float64Array(n * C),
      loss: new Float64Array(n),
      labels: new Int32Array(n),
      lines: new Int32Array(n),
      offsets: new Float64Array(n + 1),
      table: reader.info,
      summary,
    };
    for (const { batch, out } of parts) {
      const s = batch.start;
      rows.h.set(out.h, s * D);
      rows.g.set(out.g, s * C);
      rows.z.set(out.z, s * C);
      rows.loss.set(out.loss, s);
      rows.labels.set(batch.labels.subarray(0, batch.count), s);
      rows.lines.set(batch.lines.subarray(0, batch.count), s);
      rows.offsets.set(batch.offsets.subarray(0, batch.count + 1), s);
    }
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

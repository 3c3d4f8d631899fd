/**
 * The forward Engine: one loaded model with its augmented ORT session, run over a data file in
 * batches. It gives the head's inputs h and logits z, and from z in float64 (task/) the per-row
 * loss and signal g = ∂L/∂z. No cache and no policy here: rows.ts composes those.
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import { chooseTable, type ChooseOptions, type ModelShape, type TableChoice } from '../data/choose';
import type { RowLocator } from '../data/locator';
import { chooseSource, type SourceChoice } from '../data/chooseSource';
import type { SourceInfo, SourceOptions } from '../data/source';
import {
  expectedRows,
  TableReader,
  type Batch,
  type TableInfo,
  type TableOptions,
  type TableSummary,
} from '../data/table';
import type { HeadRows } from '../task/head';
import { lossAndSignal, taskFor, type Task } from '../task/loss';
import { loadModel, type LoadedModel, type LoadOptions, type ModelInfo } from './info';
import { AUG, augmentModel } from './surgery';

/** A file's rows after the forward pass: the head's view, logits, losses, and where each row is in the file. */
export interface ForwardRows extends HeadRows {
  z: Float64Array;
  loss: Float64Array;
  lines: Int32Array;
  offsets: Float64Array;
  /** Where the rows are when they are not (only) lines of a text file: image files, rows of Parquet or Arrow files. */
  locator?: RowLocator;
  table: SourceInfo;
  summary: TableSummary;
}

export interface RunOptions {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
  /** Called with each batch's h, g and labels once they are stored; it may keep or transfer h and g, which the pass no longer uses. */
  onRows?: (h: Float32Array, g: Float64Array, labels: Int32Array, count: number) => void;
}

/** What the tool asks of a model at open. */
export type EngineOptions = LoadOptions;

/** A deterministic probe batch for checking a batch-free graph against the exported one. */
function probeInput(rows: number, F: number): Float64Array {
  return Float64Array.from({ length: rows * F }, (_, q) => Math.sin(0.7 * q + 0.3));
}

/** One row forwarded alone (a test row): its place, label, features, h, z, and in float64 its loss and g. */
export interface ForwardRow {
  table: TableInfo;
  line: number;
  label: number;
  labelled: boolean;
  features: Float32Array | Float64Array;
  h: Float32Array;
  z: Float64Array;
  loss: number;
  g: Float64Array;
}
/** One loaded model with its augmented ORT session. */
export class Engine {
  /** The loss on the head's logits. */
  readonly task: Task;
  /** What the tool decided about this model that the user should know, in words. */
  readonly notes: string[];

  private constructor(
    readonly model: LoadedModel,
    private readonly session: ort.InferenceSession,
    /** Rows per run when the graph keeps the batch size it was exported with (null: any). */
    readonly runBatchSize: number | null,
  ) {
    this.task = taskFor(model.info.head.C);
    this.notes = modelNotes(model.info, runBatchSize);
  }

  get info(): ModelInfo {
    return this.model.info;
  }

  /**
   * Loads a model and compiles it. A model exported with a fixed batch size runs batch-free when
   * the rewritten graph gives the same rows as the exported one on a probe batch; otherwise in
   * batches of its exported size, the last one padded.
   */
  static async open(modelPath: string, opts: EngineOptions = {}): Promise<Engine> {
    const model = await loadModel(modelPath, opts);
    const B = model.info.fixedBatch;
    if (B === null) return new Engine(model, await compile(model, true), null);
    const fixed = await compile(model, false);
    let free: ort.InferenceSession | null = null;
    try {
      free = await compile(model, true);
      const probe = probeInput(B + 1, model.info.F);
      const a = await new Engine(model, free, null).runRows(probe, B + 1);
      const b = await new Engine(model, fixed, B).runRows(probe, B);
      let worst = 0;
      let scale = 1;
      for (let q = 0; q < b.z.length; q++) {
        worst = Math.max(worst, Math.abs(a.z[q] - b.z[q]));
        scale = Math.max(scale, Math.abs(b.z[q]));
      }
      if (worst <= 1e-4 * scale) {
        await fixed.release();
        return new Engine(model, free, null);
      }
    } catch {
      // The rewritten graph does not run: keep the exported one.
    }
    await free?.release();
    return new Engine(model, fixed, B);
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** What the data rules need to know of this model (data/choose.ts). */
  get shape(): ModelShape {
    const { F, inputName, classes } = this.info;
    return { F, classes: this.task.classes, inputName, classNames: classes };
  }

  /**
   * How to read a data file for this model: the user's options completed by the data rules
   * (label column, index column, JSONL key, class names from the labels), with the decisions in
   * words. A test or held-out file passes the training file's choice as `like`.
   */
  chooseTable(path: string, opts: TableOptions, choose: ChooseOptions = {}): Promise<TableChoice> {
    return chooseTable(path, opts, this.shape, choose);
  }

  /** chooseTable for any data source: a text table, a manifest, Parquet/Arrow, an image folder or image (data/chooseSource.ts). */
  chooseSource(path: string, opts: SourceOptions, choose: ChooseOptions = {}): Promise<SourceChoice> {
    return chooseSource(path, opts, this.shape, choose);
  }

  /** Table options implied by the model: class count and names, and the features' precision. */
  tableOptions(opts: TableOptions): TableOptions {
    return {
      ...opts,
      numClasses: this.task.classes,
      classes: opts.classes ?? this.info.classes,
      float64: this.info.inputType === 'float64',
    };
  }

  /** The file must give as many features as the model takes. */
  checkWidth(info: SourceInfo): void {
    const { F, inputDims, inputName } = this.info;
    if (info.featureCount !== F) {
      throw new InfluenceError(
        'FEATURE_COUNT_MISMATCH',
        `the model input '${inputName}' takes ${F} features ([batch, ${inputDims.join(', ')}]) but ${info.path} has ${info.featureCount} feature columns (${describeColumns(info.featureNames)})${info.hasLabel ? '' : `, with no label column ${JSON.stringify(info.labelColumn)} among them`}; skip columns with --ignore-columns or choose the features with --features${info.hasLabel ? '' : ', and name the label column with --label-column'}`,
        { file: info.path, line: 1 },
      );
    }
  }

  /** Runs one batch: labels < 0 (unlabelled rows) are taken as class 0 and their loss and g are meaningless. */
  async runBatch(
    features: Float32Array | Float64Array,
    labels: Int32Array,
    count: number,
  ): Promise<{ h: Float32Array; z: Float64Array; loss: Float64Array; g: Float64Array }> {
    const { h, z } = await this.runRows(features, count);
    const loss = new Float64Array(count);
    const g = new Float64Array(count * this.info.head.C);
    lossAndSignal(this.task, z, labels, count, loss, g);
    return { h, z, loss, g };
  }

  /** h and the model's logits (scale·z) for `count` rows, in runs of the fixed batch size when there is one. */
  private async runRows(
    features: Float32Array | Float64Array,
    count: number,
  ): Promise<{ h: Float32Array; z: Float64Array }> {
    const B = this.runBatchSize;
    if (B === null || count === B) return this.runOnce(features, count);
    const { F, head } = this.info;
    const h = new Float32Array(count * head.D);
    const z = new Float64Array(count * head.C);
    const pad = features instanceof Float64Array ? new Float64Array(B * F) : new Float32Array(B * F);
    for (let start = 0; start < count; start += B) {
      const k = Math.min(B, count - start);
      pad.fill(0);
      pad.set(features.subarray(start * F, (start + k) * F));
      const out = await this.runOnce(pad, B);
      h.set(out.h.subarray(0, k * head.D), start * head.D);
      z.set(out.z.subarray(0, k * head.C), start * head.C);
    }
    return { h, z };
  }

  private async runOnce(
    features: Float32Array | Float64Array,
    count: number,
  ): Promise<{ h: Float32Array; z: Float64Array }> {
    const { inputName, inputDims, inputType, F, head, path } = this.info;
    const x = features.subarray(0, count * F);
    const input =
      inputType === 'float64'
        ? new ort.Tensor('float64', x instanceof Float64Array ? x : Float64Array.from(x), [count, ...inputDims])
        : new ort.Tensor('float32', x instanceof Float32Array ? x : Float32Array.from(x), [count, ...inputDims]);
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await this.session.run({ [inputName]: input });
    } catch (e) {
      const why = ((e as Error).message ?? String(e)).split('\n')[0];
      throw new InfluenceError(
        'MODEL_RUN_FAILED',
        `onnxruntime could not run the model on input '${inputName}' [${count}, ${inputDims.join(', ')}] (${inputType}): ${why}; check that the model runs on a batch of that shape (an export with a fixed batch size needs --batch-size equal to it, or dynamic_axes)`,
        { file: path },
      );
    }
    const hv = out[AUG.h].data as Float32Array | Float64Array;
    const zv = out[AUG.z].data as Float32Array | Float64Array;
    if (hv.length !== count * head.D || zv.length !== count * head.C) {
      throw new InfluenceError(
        'MODEL_RUN_FAILED',
        `for a batch of ${count} rows the final layer '${head.node}' gave ${hv.length / count} inputs and ${zv.length / count} outputs per row; expected ${head.D} and ${head.C}`,
        { file: path, node: head.node },
      );
    }
    const z = new Float64Array(zv.length);
    for (let q = 0; q < z.length; q++) z[q] = head.scale * zv[q];
    return { h: hv instanceof Float32Array ? hv : Float32Array.from(hv), z };
  }

  /**
   * Forward pass over a whole file. `run.onRows` sees each batch's h, g and labels once they are
   * stored in the result (and may keep or transfer them).
   */
  async forward(path: string, tableOpts: TableOptions, run: RunOptions = {}): Promise<ForwardRows> {
    const reader = await TableReader.open(
      path,
      this.tableOptions({
        ...tableOpts,
        batchSize: run.batchSize ?? tableOpts.batchSize,
        signal: run.signal,
        onProgress: run.onProgress,
      }),
    );
    this.checkWidth(reader.info);
    const { C, D, b } = this.info.head;
    const acc = new RowsBuilder(C, D);
    // Overlap parsing of the next batch with ORT's work on the current one.
    let pending: Promise<void> | null = null;
    for await (const batch of reader.batches()) {
      throwIfAborted(run.signal);
      if (pending) await pending;
      acc.reserveFor(batch, reader.info.size);
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
  async forwardRow(path: string, k: number, tableOpts: TableOptions, run: RunOptions = {}): Promise<ForwardRow> {
    // Unless the options say otherwise, only a label column the user named explicitly must exist in the test file.
    const requireLabel = tableOpts.requireLabel ?? tableOpts.labelColumn !== undefined;
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
        return {
          table: reader.info,
          line: batch.lines[r],
          label: one[0],
          labelled,
          features,
          h: out.h,
          z: out.z,
          loss: out.loss[0],
          g: out.g,
        };
      }
      seen = batch.start + batch.count;
    }
    throw new InfluenceError(
      'ROW_OUT_OF_RANGE',
      `row ${k} does not exist: ${path} has ${seen} rows (0-based, header excluded)`,
      { file: path },
    );
  }
}

/** Notes on the output chosen, the task, a temperature and the batch size. */
function modelNotes(info: ModelInfo, runBatchSize: number | null): string[] {
  const notes: string[] = [];
  const { head } = info;
  if (info.outputs.length > 1) {
    const others = info.outputs.filter((o) => o.name !== info.outputName).map((o) => `'${o.name}' ${o.shape}`);
    notes.push(
      `explaining the model output '${info.outputName}' (${info.output}, from the final layer '${head.node}'); it also outputs ${others.join(', ')}; choose another with --output`,
    );
  }
  if (head.C === 1)
    notes.push(
      `the final layer '${head.node}' has one logit: a binary logistic head (class 1 when the logit is positive)`,
    );
  if (head.scale !== 1)
    notes.push(
      `the model's logits are ${+head.scale.toPrecision(6)} × the output of '${head.node}' (a constant ${info.steps.filter((s) => s === 'Mul' || s === 'Div').join('/')} after it); gradients and the damping are taken through that factor`,
    );
  if (info.fixedBatch !== null) {
    notes.push(
      runBatchSize === null
        ? `the model was exported with a fixed batch size of ${info.fixedBatch}; it runs with any batch size after its batch dimension was freed`
        : `the model was exported with a fixed batch size of ${info.fixedBatch} that its graph depends on: it runs ${info.fixedBatch} row${info.fixedBatch === 1 ? '' : 's'} at a time, the last batch padded`,
    );
  }
  return notes;
}

/** The model's graph, augmented (batch-free or as exported), compiled by onnxruntime; a failure is the model's, with its first line. */
async function compile(model: LoadedModel, batchFree: boolean): Promise<ort.InferenceSession> {
  try {
    // Fatal messages only: onnxruntime's own error lines would duplicate (or, for the batch probe, misreport) the errors we raise.
    return await ort.InferenceSession.create(augmentModel(model, { batchFree }), {
      graphOptimizationLevel: 'all',
      logSeverityLevel: 4,
    });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    const op =
      /Could not find an implementation for (\w+)/.exec(msg) ??
      /(?:Unrecognized|unsupported) (?:op|operator)\S*\s+'?(\w+)/i.exec(msg);
    throw new InfluenceError(
      op ? 'UNSUPPORTED_OP' : 'MODEL_INVALID',
      `onnxruntime cannot run this model: ${msg.split('\n')[0]}`,
      { file: model.info.path, node: op?.[1] },
    );
  }
}

/**
 * Growable per-row arrays of a forward pass, sized from the first batch's bytes per row (grown if
 * the guess falls short), so a large file is not held twice while it is assembled.
 */
export class RowsBuilder {
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
    const grow = <T extends Float32Array | Float64Array | Int32Array>(
      a: T,
      width: number,
      make: (len: number) => T,
    ): T => {
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

  /** On the first batch: room for the rows that the file's size suggests at that batch's bytes per row. */
  reserveFor(batch: Batch, fileBytes: number): void {
    if (batch.start !== 0 || batch.count === 0) return;
    this.reserve(Math.ceil(expectedRows(batch, fileBytes) * 1.02) + 16);
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
function checkFinite(
  out: { z: Float64Array; h: Float32Array },
  batch: Pick<Batch, 'start' | 'count' | 'lines'>,
  info: TableInfo,
): void {
  const C = out.z.length / batch.count;
  for (let r = 0; r < batch.count; r++) {
    for (let c = 0; c < C; c++) {
      if (!Number.isFinite(out.z[r * C + c])) {
        throw new InfluenceError(
          'MODEL_NOT_FINITE',
          `the model produced a non-finite logit for row ${batch.start + r}`,
          { file: info.path, line: batch.lines[r] },
        );
      }
    }
  }
}

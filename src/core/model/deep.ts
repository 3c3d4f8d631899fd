/**
 * The model beyond its head: the user's graph with the taps that a backward pass reads as extra
 * outputs (surgery.ts), and our float64 backward graph (backward.ts) over the chosen layers. It
 * gives, per row, the logits z (float64, scaled as Engine's) and the head's input h, and per row
 * and direction v (a signal at the logits) the gradient Jᵀv over the chosen parameters, or the
 * layer factors that make it.
 */
import * as ort from 'onnxruntime-node';
import { InfluenceError, throwIfAborted, type Progress } from '../errors';
import type { RowLocator } from '../data/locator';
import type { SourceInfo, SourceOptions } from '../data/source';
import type { Batch, TableSummary } from '../data/table';
import { TableReader } from '../data/table';
import type { RowsCache } from '../cache/store';
import { isTable, readSourceRows, sourceFeatures, type ImageRequest } from '../sources';
import { F32, F64, GraphBuilder, type Kernel } from '../ort/graph';
import { buildBackward, type Backward } from './backward';
import type { Engine } from './engine';
import { chooseLayers, findLayers, gradientPath, type GradientPath, type Layer, type LayerSpec } from './layers';
import { GraphIndex } from './onnx';
import { AUG, augmentModel, tapName } from './surgery';

/** How many rows a pass will give, for sizing what it fills: a text table's size in bytes, or another source's rows. */
export type PassExtent = { bytes: number } | { rows: number };

/** One batch through the user's graph: its taps (as ORT gave them), the logits and the head's input. */
export interface DeepForward {
  count: number;
  taps: ort.Tensor[];
  /** count×K logits (scale·z), float64. */
  z: Float64Array;
  /** count×D, the head's input. */
  h: Float32Array;
}

/** What a later pass reads of a batch: its rows' place and labels. */
export interface PassRows {
  start: number;
  count: number;
  labels: Int32Array;
}

/** What a backward kernel reads of a forward batch: the taps, and the logits the signals come from. */
export type TapForward = Pick<DeepForward, 'count' | 'taps' | 'z'>;

/** A deterministic probe batch (as Engine's) for the taps' shapes. */
function probeInput(rows: number, F: number): Float64Array {
  return Float64Array.from({ length: rows * F }, (_, q) => Math.sin(0.7 * q + 0.3));
}

const slice = (t: ort.Tensor, start: number, k: number): ort.Tensor => {
  const row = t.dims.slice(1).reduce((a, b) => a * b, 1);
  return new ort.Tensor(t.type as 'float32', (t.data as Float32Array).subarray(start * row, (start + k) * row), [
    k,
    ...t.dims.slice(1),
  ]);
};

/** A chosen layer's factors as the backward pass gives them: T positions (1 for a dense layer on rows), D̃ inputs, out outputs. */
export interface FactorShape {
  T: number;
  Dt: number;
  out: number;
}

/** One row's layer factors: X (T×D̃) and S (R×T×out) per chosen layer, float64. */
export interface RowFactors {
  x: Float64Array;
  s: Float64Array;
}

/** Float64 values per backward run (rows × directions × the widest value per row and direction). */
const RUN_VALUES = 1 << 22;

export class DeepEngine {
  /** Σ parameters of the chosen layers, and each layer's offset in θ. */
  readonly P: number;
  readonly offsets: number[];
  /** Per chosen layer, the shape of its factors. */
  readonly shapes: FactorShape[];
  /** Float64 values per row and direction of the backward pass's widest value (a signal or a layer's factor). */
  readonly width: number;
  private constructor(
    readonly eng: Engine,
    readonly all: Layer[],
    readonly chosen: Layer[],
    readonly path: GradientPath,
    private readonly session: ort.InferenceSession,
    readonly rowDims: Map<string, number[]>,
    private readonly tapElem: typeof F32 | typeof F64,
  ) {
    let off = 0;
    this.offsets = chosen.map((l) => {
      const o = off;
      off += l.parameters;
      return o;
    });
    this.P = off;
    this.shapes = this.build().b.factors.map((f) => ({ T: f.T, Dt: f.Dt, out: f.layer.out }));
    const values = [...rowDims.values()].map((d) => d.reduce((a, b) => a * b, 1));
    this.width = Math.max(1, ...values, ...this.shapes.map((f) => f.T * Math.max(f.Dt, f.out)));
  }

  /**
   * Rows per backward run with R directions, for a kernel whose widest value holds `perDirection`
   * float64 values per row and direction (default: the backward pass's own; P for a kernel that
   * forms whole gradients).
   */
  rowsPerRun(R: number, perDirection = this.width): number {
    return Math.max(1, Math.floor(RUN_VALUES / (R * Math.max(perDirection, this.width))));
  }

  /** Number of logits K. */
  get K(): number {
    return this.eng.info.head.C;
  }

  /** Analyses the layers and the path (errors for an unknown layer or an unsupported op), and compiles the graph with its taps. */
  static async open(eng: Engine, spec: LayerSpec): Promise<DeepEngine> {
    const { info, proto } = eng.model;
    const file = info.path;
    if (eng.runBatchSize !== null) {
      throw new InfluenceError(
        'BAD_OPTION',
        `--layers beyond the head needs a model that runs on any batch size; this one was exported with a fixed batch size of ${info.fixedBatch} that its graph depends on`,
        { file },
      );
    }
    const graph = proto.graph!;
    const idx = new GraphIndex(graph);
    const all = findLayers(graph, idx, info.head);
    const chosen = chooseLayers(all, spec, file);
    const path = gradientPath(graph, idx, info.head, all, chosen, file);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(
        augmentModel(eng.model, { batchFree: info.fixedBatch !== null, taps: path.taps }),
        { graphOptimizationLevel: 'all', logSeverityLevel: 4 },
      );
    } catch (e) {
      throw new InfluenceError(
        'MODEL_INVALID',
        `onnxruntime cannot run this model with the values of the backward pass as outputs: ${((e as Error).message ?? String(e)).split('\n')[0]}`,
        { file },
      );
    }
    // The taps' per-row shapes, from probe runs of two batch sizes: each must keep the batch dim first.
    const rowDims = new Map<string, number[]>();
    let tapElem: typeof F32 | typeof F64 = info.head.elem === 'float64' ? F64 : F32;
    const runs = await Promise.all([2, 3].map((k) => DeepEngine.run(eng, session, probeInput(k, info.F), k)));
    path.taps.forEach((name, j) => {
      const [a, b] = runs.map((r) => r[tapName(j)]);
      if (a.type !== 'float32' && a.type !== 'float64') {
        throw new InfluenceError(
          'UNSUPPORTED_OP',
          `the value '${name}' on the backward path is ${a.type}; the backward pass reads float32 or float64 values`,
          { file },
        );
      }
      if (
        a.dims[0] !== 2 ||
        b.dims[0] !== 3 ||
        a.dims.length !== b.dims.length ||
        a.dims.slice(1).some((d, q) => d !== b.dims[q + 1])
      ) {
        throw new InfluenceError(
          'UNSUPPORTED_OP',
          `the value '${name}' on the backward path does not keep the batch dimension first (shapes [${a.dims.join(', ')}] and [${b.dims.join(', ')}] for batches of 2 and 3 rows): per-example gradients need it`,
          { file },
        );
      }
      if (a.type === 'float64') tapElem = F64;
      rowDims.set(name, a.dims.slice(1).map(Number));
    });
    if (path.taps.some((_, j) => runs[0][tapName(j)].type !== (tapElem === F64 ? 'float64' : 'float32'))) {
      throw new InfluenceError('UNSUPPORTED_OP', 'the values on the backward path mix float32 and float64', { file });
    }
    return new DeepEngine(eng, all, chosen, path, session, rowDims, tapElem);
  }

  private static async run(
    eng: Engine,
    session: ort.InferenceSession,
    features: Float32Array | Float64Array,
    count: number,
  ): Promise<ort.InferenceSession.OnnxValueMapType> {
    const { inputName, inputDims, inputType, F, path } = eng.info;
    const x = features.subarray(0, count * F);
    const input =
      inputType === 'float64'
        ? new ort.Tensor('float64', x instanceof Float64Array ? x : Float64Array.from(x), [count, ...inputDims])
        : new ort.Tensor('float32', x instanceof Float32Array ? x : Float32Array.from(x), [count, ...inputDims]);
    try {
      return await session.run({ [inputName]: input });
    } catch (e) {
      throw new InfluenceError(
        'MODEL_RUN_FAILED',
        `onnxruntime could not run the model on input '${inputName}' [${count}, ${inputDims.join(', ')}]: ${((e as Error).message ?? String(e)).split('\n')[0]}`,
        { file: path },
      );
    }
  }

  /** The chosen layers' parameters θ = [θ_1; …; θ_k] (each [W | b] row-major), float64. */
  theta(): Float64Array {
    const out = new Float64Array(this.P);
    this.chosen.forEach((l, q) => {
      const Dt = l.fanIn + (l.bias ? 1 : 0);
      for (let o = 0; o < l.out; o++) {
        out.set(l.W.subarray(o * l.fanIn, (o + 1) * l.fanIn), this.offsets[q] + o * Dt);
        if (l.b) out[this.offsets[q] + o * Dt + l.fanIn] = l.b[o];
      }
    });
    return out;
  }

  /** Runs a batch through the user's graph. */
  async forward(features: Float32Array | Float64Array, count: number): Promise<DeepForward> {
    const out = await DeepEngine.run(this.eng, this.session, features, count);
    const { head, path } = this.eng.info;
    const zv = out[AUG.z].data as Float32Array | Float64Array;
    const hv = out[AUG.h].data as Float32Array | Float64Array;
    if (zv.length !== count * head.C)
      throw new InfluenceError(
        'MODEL_RUN_FAILED',
        `the final layer gave ${zv.length / count} outputs per row; expected ${head.C}`,
        { file: path },
      );
    // The logits in float64 from the head's input (z = scale·(W h + b)): the float32 head's own rounding left out.
    const h = hv instanceof Float32Array ? hv : Float32Array.from(hv);
    const z = new Float64Array(zv.length);
    const { C, D, W, b } = head;
    if (h.length === count * D) {
      for (let i = 0; i < count; i++) {
        for (let c = 0; c < C; c++) {
          let v = b ? b[c] : 0;
          for (let j = 0; j < D; j++) v += W[c * D + j] * h[i * D + j];
          z[i * C + c] = head.scale * v;
        }
      }
    } else for (let q = 0; q < z.length; q++) z[q] = head.scale * zv[q];
    for (let q = 0; q < z.length; q++) {
      if (!Number.isFinite(z[q]))
        throw new InfluenceError(
          'MODEL_NOT_FINITE',
          `the model produced a non-finite logit for row ${Math.floor(q / head.C)} of a batch`,
          { file: path },
        );
    }
    return { count, taps: this.path.taps.map((_, j) => out[tapName(j)]), z, h };
  }

  private build(): { g: GraphBuilder; b: Backward } {
    const g = new GraphBuilder();
    const { info, proto } = this.eng.model;
    const b = buildBackward(g, {
      path: this.path,
      chosen: this.chosen,
      layers: this.all,
      head: info.head,
      idx: new GraphIndex(proto.graph!),
      opset: info.opset,
      rowDims: this.rowDims,
      tapElem: this.tapElem,
      K: info.head.C,
      file: info.path,
    });
    return { g, b };
  }

  /**
   * Compiles the backward graph with outputs of the caller's (`outputs` adds them, from the
   * backward pass's tensors), for runs on rows of forward batches. With a `key`, the kernel is
   * compiled once and shared (its data come in as inputs), for kernels made per test row or damping.
   */
  async kernel(outputs: (g: GraphBuilder, b: Backward) => void, key?: string): Promise<DeepKernel> {
    const have = key === undefined ? undefined : this.shared.get(key);
    if (have) return have;
    const { g, b } = this.build();
    outputs(g, b);
    const k = new DeepKernel(await g.session(), b, this.K);
    this.kernels.push(k);
    if (key !== undefined) this.shared.set(key, k);
    return k;
  }

  private readonly kernels: DeepKernel[] = [];
  private readonly shared = new Map<string, DeepKernel>();
  private grad: DeepKernel | null = null;
  private factorK: DeepKernel | null = null;
  private ggnK: DeepKernel | null = null;

  /**
   * Jᵀv over the chosen parameters for rows [start, start + k) of a forward batch, each with R
   * directions v (signal: k×R×K, row-major): k×R×P, float64.
   */
  async gradients(fw: TapForward, start: number, k: number, signal: Float64Array, R: number): Promise<Float64Array> {
    this.grad ??= await this.kernel((g, b) => g.output(b.flat, 'grad', F64, ['k', 'R', this.P]));
    return (await this.grad.run(fw, start, k, signal, R)).grad;
  }

  /** The chosen layers' factors of rows [start, start + k), each row with R directions (signal k×R×K): per layer x (k×T×D̃) and s (k×R×T×out). */
  async factors(fw: TapForward, start: number, k: number, signal: Float64Array, R: number): Promise<RowFactors[]> {
    this.factorK ??= await this.kernel((g, b) =>
      b.factors.forEach((f, q) => {
        g.output(f.x, `x${q}`, F64, ['k', 1, f.T, f.Dt]);
        g.output(f.s, `s${q}`, F64, ['k', 'R', f.T, f.layer.out]);
      }),
    );
    const out = await this.factorK.run(fw, start, k, signal, R);
    return this.shapes.map((_, q) => ({ x: out[`x${q}`], s: out[`s${q}`] }));
  }

  /**
   * The curvature's sum for rows [start, start + k): signal k×K×K holds per row the K columns of a
   * factor V of A (VVᵀ = A). Returns H + Σ_rows Σ_columns (Jᵀv)(Jᵀv)ᵀ (P×P), float64.
   */
  async ggn(fw: TapForward, start: number, k: number, signal: Float64Array, H: Float64Array): Promise<Float64Array> {
    const { P, K } = this;
    this.ggnK ??= await this.kernel((g, b) => {
      const J = g.reshape(b.flat, [-1, P]);
      g.output(g.op('Gemm', [J, J, g.input('hin', F64, [P, P])], { transA: 1 }), 'h', F64, [P, P]);
    });
    return (await this.ggnK.run(fw, start, k, signal, K, { hin: new ort.Tensor('float64', H, [P, P]) })).h;
  }

  async release(): Promise<void> {
    await Promise.all([this.session.release(), ...this.kernels.map((k) => k.release())]);
    this.kernels.length = 0;
    this.shared.clear();
    this.grad = this.factorK = this.ggnK = null;
  }

  /**
   * A pass over a data file in batches through the user's graph: `onBatch` sees each batch with
   * its forward results (the caller runs the backward passes it needs on them). A text table is
   * read by TableReader; any other source (image folder, manifest, Parquet/Arrow) gives its rows as
   * the head reads them (readSourceRows, through the cache: labels, lines, the files' stamps and
   * hashes) and then its features again, in row order, for this graph.
   */
  async pass(
    path: string,
    tableOpts: SourceOptions,
    run: {
      signal?: AbortSignal;
      onProgress?: Progress;
      batchSize?: number;
      images?: ImageRequest;
      cache?: RowsCache | null;
    },
    onBatch: (batch: Batch, fw: DeepForward, extent: PassExtent) => Promise<void>,
  ): Promise<{ table: SourceInfo; summary: TableSummary; locator?: RowLocator }> {
    if (!(await isTable(path, tableOpts))) {
      const images = run.images ?? {};
      const rows = await readSourceRows(this.eng, path, tableOpts, images, run);
      for await (const { start, count, features } of sourceFeatures(this.eng, path, tableOpts, images, run)) {
        throwIfAborted(run.signal);
        const batch: Batch = {
          start,
          count,
          features,
          labels: rows.labels.subarray(start, start + count),
          lines: rows.lines.subarray(start, start + count),
          offsets: rows.offsets.subarray(start, start + count + 1),
        };
        await onBatch(batch, await this.forward(features, count), { rows: rows.n });
      }
      return { table: rows.table, summary: rows.summary, locator: rows.locator };
    }
    const reader = await TableReader.open(
      path,
      this.eng.tableOptions({
        ...tableOpts,
        batchSize: run.batchSize ?? tableOpts.batchSize ?? 1024,
        signal: run.signal,
        onProgress: run.onProgress,
      }),
    );
    this.eng.checkWidth(reader.info);
    for await (const batch of reader.batches()) {
      throwIfAborted(run.signal);
      if (batch.count === 0) continue;
      await onBatch(batch, await this.forward(batch.features, batch.count), { bytes: reader.info.size });
    }
    return { table: reader.info, summary: reader.summary() };
  }
}

/** A compiled backward graph with outputs of its own, run on rows of forward batches. */
export class DeepKernel {
  constructor(
    private readonly kernel: Kernel,
    readonly backward: Backward,
    private readonly K: number,
  ) {}

  /** Runs rows [start, start + k) of a forward batch with R directions each (signal k×R×K) and further feeds; its outputs as float64. */
  async run(
    fw: TapForward,
    start: number,
    k: number,
    signal: Float64Array,
    R: number,
    extra: Record<string, ort.Tensor> = {},
  ): Promise<Record<string, Float64Array>> {
    const feeds: Record<string, ort.Tensor> = { ...extra };
    this.backward.tapInputs.forEach(
      (name, j) => (feeds[name] = start === 0 && k === fw.count ? fw.taps[j] : slice(fw.taps[j], start, k)),
    );
    feeds[this.backward.signal] = new ort.Tensor('float64', signal, [k, R, this.K]);
    const out = await this.kernel.run(feeds);
    const res: Record<string, Float64Array> = {};
    for (const [name, t] of Object.entries(out)) res[name] = t.data as Float64Array;
    return res;
  }

  async release(): Promise<void> {
    await this.kernel.release();
  }
}

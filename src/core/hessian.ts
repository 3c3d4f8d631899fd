/**
 * The fast path's explicit head Hessian H₀ = Σ_i A_i ⊗ x̃_ix̃_iᵀ (with X̃ᵀX̃ and Σ A_i for EK-FAC),
 * summed chunk by chunk with ortmath.hessianKernel: float32 products of float64 weights, summed
 * per chunk in float64.
 *
 * HessianSum does it in the calling thread. HessianFeeder does it in a worker thread fed with each
 * batch of the forward pass, so that the sums use the core that sits idle while the main thread
 * parses the data file (onnxruntime-node runs synchronously on the thread that calls it).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CancelledError, type Progress } from './errors';
import { addInto } from './linalg';
import { f32, f64, HESSIAN_BLOCK, hessianKernel, type HeadShape, type Kernel } from './ortmath';

export interface HessianStats {
  /** Σ_i A_i ⊗ x̃_ix̃_iᵀ, P×P (not divided by n). */
  H0: Float64Array;
  /** X̃ᵀX̃, D̃×D̃. */
  S: Float64Array;
  /** Σ_i A_i, C×C. */
  Abar: Float64Array;
  /** Rows summed. */
  n: number;
}

/** p = g + e_y (float64) for the first k rows of g (row-major, C wide) and labels, in `out` (which may be longer). */
export function probabilities(g: Float64Array, labels: Int32Array, k: number, C: number, out: Float64Array = new Float64Array(k * C)): Float64Array {
  const p = out.subarray(0, k * C);
  p.set(g.subarray(0, k * C));
  for (let r = 0; r < k; r++) p[r * C + labels[r]] += 1;
  return p;
}

export class HessianSum {
  private readonly Dt: number;
  private readonly blocks: { j0: number; j1: number; acc: Float64Array }[] = [];
  private readonly asum: Float64Array;
  private ones = new Float32Array(0);
  private n = 0;

  private constructor(
    private readonly shape: HeadShape,
    private kernel: Kernel | null,
  ) {
    const { C, D, bias } = shape;
    this.Dt = D + (bias ? 1 : 0);
    const W = (C * (C + 1)) / 2 + 1;
    for (let j0 = 0; j0 < this.Dt; j0 += HESSIAN_BLOCK) {
      const j1 = Math.min(this.Dt, j0 + HESSIAN_BLOCK);
      this.blocks.push({ j0, j1, acc: new Float64Array(W * (j1 - j0) * (this.Dt - j0)) });
    }
    this.asum = new Float64Array(W);
  }

  /** `threads`: onnxruntime intra-op threads (default: every core). */
  static async create(shape: HeadShape, threads?: number): Promise<HessianSum> {
    return new HessianSum(shape, await hessianKernel(shape, threads));
  }

  /** A sum with no kernel, for merging partial sums into. */
  static empty(shape: HeadShape): HessianSum {
    return new HessianSum(shape, null);
  }

  get rows(): number {
    return this.n;
  }

  /** The raw sums (before assembly), to be merged into another HessianSum of the same shape. */
  partial(): HessianPartial {
    return { blocks: this.blocks.map((b) => b.acc), asum: this.asum, n: this.n };
  }

  merge(p: HessianPartial): void {
    this.blocks.forEach((b, i) => addInto(b.acc, p.blocks[i]));
    addInto(this.asum, p.asum);
    this.n += p.n;
  }

  /** Adds k rows: h (k×D float32) and p (k×C float64). */
  async add(h: Float32Array, p: Float64Array, k: number): Promise<void> {
    if (!this.kernel) throw new Error('HessianSum is finished');
    const { C, D, bias } = this.shape;
    if (this.ones.length < k) this.ones = new Float32Array(k).fill(1);
    const out = await this.kernel.run({
      h: f32(h.subarray(0, k * D), [k, D]),
      ...(bias ? { ones: f32(this.ones.subarray(0, k), [k, 1]) } : {}),
      p: f64(p.subarray(0, k * C), [k, C]),
    });
    this.blocks.forEach((b, i) => addInto(b.acc, out[`r${i}`].data as Float32Array));
    addInto(this.asum, out.asum.data as Float64Array);
    this.n += k;
  }

  /** The sums, assembled (and the kernel released). */
  async finish(): Promise<HessianStats> {
    await this.release();
    const { C } = this.shape;
    const Dt = this.Dt;
    const P = C * Dt;
    const H0 = new Float64Array(P * P);
    const S = new Float64Array(Dt * Dt);
    const Abar = new Float64Array(C * C);
    for (const { j0, j1, acc } of this.blocks) {
      const m = (j1 - j0) * (Dt - j0);
      let q = 0;
      for (let c = 0; c < C; c++) {
        for (let d = c; d < C; d++, q++) {
          for (let j = j0; j < j1; j++) {
            // Block (c,d) is symmetric in the features: entry (j,k) also fills (k,j), and both of (d,c)'s.
            for (let k = j; k < Dt; k++) {
              const v = acc[q * m + (j - j0) * (Dt - j0) + (k - j0)];
              H0[(c * Dt + j) * P + d * Dt + k] = v;
              H0[(c * Dt + k) * P + d * Dt + j] = v;
              H0[(d * Dt + k) * P + c * Dt + j] = v;
              H0[(d * Dt + j) * P + c * Dt + k] = v;
            }
          }
        }
      }
      for (let j = j0; j < j1; j++) {
        for (let k = j; k < Dt; k++) S[j * Dt + k] = S[k * Dt + j] = acc[q * m + (j - j0) * (Dt - j0) + (k - j0)];
      }
    }
    let q = 0;
    for (let c = 0; c < C; c++) for (let d = c; d < C; d++, q++) Abar[c * C + d] = Abar[d * C + c] = this.asum[q];
    return { H0, S, Abar, n: this.n };
  }

  async release(): Promise<void> {
    const k = this.kernel;
    this.kernel = null;
    await k?.release();
  }
}


/** Messages to the worker (hessianWorker.ts) and back. */
export type ToHessianWorker = { type: 'rows'; h: Float32Array; g: Float64Array; labels: Int32Array; k: number } | { type: 'finish' };
export type FromHessianWorker = { type: 'summed'; rows: number } | { type: 'done'; partial: HessianPartial } | { type: 'error'; message: string };

/** HessianSum's sums before assembly. */
export interface HessianPartial {
  blocks: Float64Array[];
  asum: Float64Array;
  n: number;
}

/**
 * The worker's script: the bundle beside this one (dist/), or, when the engine runs from its
 * TypeScript source (tests, under tsx, whose loader does not reach worker threads), the built one.
 */
function workerScript(): string | null {
  const file = __filename.endsWith('.ts') ? join(__dirname, '../../dist/hessian-worker.js') : join(__dirname, 'hessian-worker.js');
  return existsSync(file) ? file : null;
}

/** Rows of the pass that the worker has not been given, as [start, end) ranges in order. */
type Ranges = [number, number][];

/**
 * Sums H₀ over the rows of a forward pass with a worker thread and this one, one core each. During
 * the pass the worker takes a batch whenever it is free (the main thread is busy parsing); the
 * rest is shared out after the pass, chunk by chunk, between the worker and this thread, and the
 * two sums are added. Nothing starts until there are enough rows for the fast path (`startAt`).
 * Any failure of the worker only makes finish() return null: the caller then sums in-thread.
 */
export class HessianFeeder {
  private worker: Worker | null = null;
  private failed = false;
  private seen = 0;
  private inFlight = 0;
  private readonly left: Ranges = [];
  private workerRows = 0;
  private result: Promise<HessianPartial | null> | null = null;
  private onSummed: (() => void) | null = null;

  constructor(
    private readonly shape: HeadShape,
    private readonly startAt: number,
  ) {}

  /** For Engine.forwardTable's `onRows`: takes the batch's h and g (the forward pass is done with them). */
  readonly onRows = (h: Float32Array, g: Float64Array, labels: Int32Array, k: number): void => {
    const start = this.seen;
    this.seen += k;
    if (!this.failed && this.seen >= this.startAt && !this.worker) this.start();
    if (this.worker && this.inFlight === 0) this.post(h, g, labels.slice(0, k), k, true);
    else addRange(this.left, start, start + k);
  };

  private start(): void {
    const script = workerScript();
    if (!script) {
      this.failed = true;
      return;
    }
    const worker = new Worker(script, { workerData: this.shape });
    // Not what keeps the process alive during the pass (finish() refs it while it waits; close() ends it).
    worker.unref();
    this.result = new Promise((resolve) => {
      worker.on('message', (m: FromHessianWorker) => {
        if (m.type === 'summed') {
          this.inFlight--;
          this.workerRows = m.rows;
          this.onSummed?.();
        } else resolve(m.type === 'done' ? m.partial : null);
      });
      worker.on('error', () => resolve(null));
      worker.on('exit', () => resolve(null));
    });
    this.worker = worker;
  }

  private post(h: Float32Array, g: Float64Array, labels: Int32Array, k: number, own: boolean): void {
    // A batch's own ORT output buffers move to the worker (when each is a whole buffer of its own);
    // anything else is copied by postMessage.
    const transfer = new Set<ArrayBuffer>();
    if (own) for (const a of [h, g, labels]) if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength) transfer.add(a.buffer as ArrayBuffer);
    if (transfer.size < 3) transfer.clear();
    this.inFlight++;
    this.worker!.postMessage({ type: 'rows', h, g, labels, k } satisfies ToHessianWorker, [...transfer]);
  }

  /**
   * The sums over all rows of the pass, or null when no worker ran (too few rows) or it failed.
   * Reports progress; cancellable.
   */
  async finish(rows: Pick<HeadRowsLike, 'n' | 'h' | 'g' | 'labels'>, signal?: AbortSignal, onProgress?: Progress): Promise<HessianStats | null> {
    const { n } = rows;
    if (!this.worker || !this.result || this.seen !== n) return null;
    // Waiting on the worker alone must keep the event loop (and the process) alive.
    this.worker.ref();
    const { C, D } = this.shape;
    const chunks: Ranges = [];
    for (const [a, b] of this.left) for (let s = a; s < b; s += SHARE_CHUNK) chunks.push([s, Math.min(b, s + SHARE_CHUNK)]);
    let mine = 0;
    const progress = () => onProgress?.('hessian', this.workerRows + mine, n);
    const feed = () => {
      // Keep the worker one chunk ahead.
      while (this.worker && this.inFlight < 1 && chunks.length) {
        const [a, b] = chunks.shift()!;
        this.post(rows.h.slice(a * D, b * D) as Float32Array, rows.g.slice(a * C, b * C), rows.labels.slice(a, b), b - a, false);
      }
    };
    this.onSummed = () => {
      progress();
      feed();
    };
    feed();
    const local = chunks.length ? await HessianSum.create(this.shape, 1) : HessianSum.empty(this.shape);
    let p = new Float64Array(0);
    try {
      while (chunks.length) {
        if (signal?.aborted) throw new CancelledError();
        const [a, b] = chunks.pop()!;
        if (p.length < (b - a) * C) p = new Float64Array((b - a) * C);
        await local.add(rows.h.subarray(a * D, b * D) as Float32Array, probabilities(rows.g.subarray(a * C, b * C), rows.labels.subarray(a, b), b - a, C, p), b - a);
        mine += b - a;
        progress();
      }
    } finally {
      await local.release();
    }
    this.worker.postMessage({ type: 'finish' } satisfies ToHessianWorker);
    const aborted = new Promise<'aborted'>((resolve) => {
      if (signal?.aborted) resolve('aborted');
      signal?.addEventListener('abort', () => resolve('aborted'), { once: true });
    });
    const r = await Promise.race([this.result, aborted]);
    if (r === 'aborted') throw new CancelledError();
    if (!r) return null;
    local.merge(r);
    return local.rows === n ? local.finish() : null;
  }

  /** Stops the worker (if any). */
  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    if (w) await w.terminate();
  }
}

/** What finish() reads of the pass's rows. */
interface HeadRowsLike {
  n: number;
  h: Float32Array | Float64Array;
  g: Float64Array;
  labels: Int32Array;
}

/** Rows per chunk shared out after the pass. */
const SHARE_CHUNK = 4096;

function addRange(r: Ranges, a: number, b: number): void {
  const last = r[r.length - 1];
  if (last && last[1] === a) last[1] = b;
  else r.push([a, b]);
}

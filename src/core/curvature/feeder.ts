/**
 * HessianFeeder sums the explicit Hessian in a worker thread fed with each batch of the forward
 * pass, so that the sums use the core that sits idle while the main thread parses the data file
 * (onnxruntime-node runs synchronously on the thread that calls it).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CancelledError, type Progress } from '../errors';
import type { HeadRows, HeadShape } from '../task/head';
import { probabilities } from '../task/loss';
import { HessianSum, type HessianStats } from './hessian';
import type { FromHessianWorker, HessianPartial, ToHessianWorker } from './hessianProtocol';

/**
 * The worker's script: the bundle beside this one (dist/), or, when the engine runs from its
 * TypeScript source (tests, under tsx, whose loader does not reach worker threads), the built one.
 */
function workerScript(): string | null {
  const file = __filename.endsWith('.ts')
    ? join(__dirname, '../../../dist/hessian-worker.js')
    : join(__dirname, 'hessian-worker.js');
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
    if (own)
      for (const a of [h, g, labels])
        if (a.byteOffset === 0 && a.byteLength === a.buffer.byteLength) transfer.add(a.buffer as ArrayBuffer);
    if (transfer.size < 3) transfer.clear();
    this.inFlight++;
    this.worker!.postMessage({ type: 'rows', h, g, labels, k } satisfies ToHessianWorker, [...transfer]);
  }

  /**
   * The sums over all rows of the pass, or null when no worker ran (too few rows) or it failed.
   * Reports progress; cancellable.
   */
  async finish(
    rows: Pick<HeadRows, 'n' | 'h' | 'g' | 'labels'>,
    signal?: AbortSignal,
    onProgress?: Progress,
  ): Promise<HessianStats | null> {
    const { n } = rows;
    if (!this.worker || !this.result || this.seen !== n) return null;
    // Waiting on the worker alone must keep the event loop (and the process) alive.
    this.worker.ref();
    const { C, D } = this.shape;
    const chunks: Ranges = [];
    for (const [a, b] of this.left)
      for (let s = a; s < b; s += SHARE_CHUNK) chunks.push([s, Math.min(b, s + SHARE_CHUNK)]);
    let mine = 0;
    const progress = () => onProgress?.('hessian', this.workerRows + mine, n);
    const feed = () => {
      // Keep the worker one chunk ahead.
      while (this.worker && this.inFlight < 1 && chunks.length) {
        const [a, b] = chunks.shift()!;
        this.post(
          rows.h.slice(a * D, b * D) as Float32Array,
          rows.g.slice(a * C, b * C),
          rows.labels.slice(a, b),
          b - a,
          false,
        );
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
        await local.add(
          rows.h.subarray(a * D, b * D) as Float32Array,
          probabilities(rows.g.subarray(a * C, b * C), rows.labels.subarray(a, b), b - a, C, p),
          b - a,
        );
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

/** Rows per chunk shared out after the pass. */
const SHARE_CHUNK = 4096;

function addRange(r: Ranges, a: number, b: number): void {
  const last = r[r.length - 1];
  if (last && last[1] === a) last[1] = b;
  else r.push([a, b]);
}

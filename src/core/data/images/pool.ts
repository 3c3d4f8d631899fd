/**
 * Decoding images in parallel: a pool of worker threads, each loading chunks of images (read, hash,
 * decode, preprocess) and transferring their features back. Chunks come back in order, with at
 * most a few in flight, so memory stays bounded however many images there are. A few images, or a
 * run from the TypeScript sources without a built worker, are loaded on the calling thread.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { CancelledError, InfluenceError, throwIfAborted, type ErrorCode, type Progress } from '../../errors';
import { loadImage, type ImageFacts, type ImageTask } from './load';
import type { Pipeline } from './preprocess';
import type { FromImageWorker, ToImageWorker } from './poolProtocol';

/** The worker's script: the bundle beside this one (dist/), or from the sources (tests) the built one. */
function workerScript(): string | null {
  const file = __filename.endsWith('.ts')
    ? join(__dirname, '../../../../dist/image-worker.js')
    : join(__dirname, 'image-worker.js');
  return existsSync(file) ? file : null;
}

export interface LoadedChunk {
  /** Index of the chunk's first task. */
  start: number;
  count: number;
  /** count × F features. */
  features: Float32Array | Float64Array;
  facts: ImageFacts[];
}

export interface PoolOptions {
  signal?: AbortSignal;
  onProgress?: Progress;
  /** Images per chunk (default 64). */
  chunk?: number;
  /** Fewer tasks than this are loaded on the calling thread (default 96). */
  threadsFrom?: number;
}

interface Slot {
  worker: Worker;
}

/** Threads used by default: every core (the caller's thread mostly waits for them or runs onnxruntime). */
export function defaultThreads(): number {
  return Math.max(1, Math.min(8, availableParallelism()));
}

export class ImagePool {
  private slots: Slot[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, (m: FromImageWorker) => void>();
  /** Decoded in total (for the tests' count of re-decoded images). */
  decoded = 0;

  constructor(private readonly threads = defaultThreads()) {}

  private ensure(): boolean {
    if (this.slots.length) return true;
    const script = workerScript();
    if (!script) return false;
    for (let i = 0; i < this.threads; i++) {
      const worker = new Worker(script);
      worker.unref();
      worker.on('message', (m: FromImageWorker) => {
        const done = this.waiting.get(m.id);
        this.waiting.delete(m.id);
        done?.(m);
      });
      worker.on('error', (e) => {
        for (const [id, done] of this.waiting) {
          this.waiting.delete(id);
          done({ id, error: { index: 0, internal: (e as Error)?.stack ?? String(e) } });
        }
      });
      this.slots.push({ worker });
    }
    return true;
  }

  private send(slot: Slot, tasks: ImageTask[], pipeline: Pipeline): Promise<FromImageWorker> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      slot.worker.postMessage({ id, tasks, pipeline } satisfies ToImageWorker);
    });
  }

  /** Loads every task, yielding chunks in task order. The first failing image (in task order) throws. */
  async *load(tasks: ImageTask[], pipeline: Pipeline, opts: PoolOptions = {}): AsyncGenerator<LoadedChunk> {
    const size = opts.chunk ?? 64;
    const total = tasks.length;
    opts.onProgress?.('images', 0, total);
    if (total < (opts.threadsFrom ?? 96) || !this.ensure()) {
      for (let start = 0; start < total; start += size) {
        throwIfAborted(opts.signal);
        const count = Math.min(size, total - start);
        const F = pipeline.features;
        const features = pipeline.float64 ? new Float64Array(count * F) : new Float32Array(count * F);
        const facts: ImageFacts[] = [];
        for (let i = 0; i < count; i++) facts.push(await loadImage(tasks[start + i], pipeline, features, i * F));
        this.decoded += count;
        opts.onProgress?.('images', start + count, total);
        yield { start, count, features, facts };
      }
      return;
    }
    const chunks: [number, number][] = [];
    for (let start = 0; start < total; start += size) chunks.push([start, Math.min(size, total - start)]);
    const inFlight: Promise<FromImageWorker>[] = [];
    let next = 0;
    // The threads keep the process alive only while they have work.
    for (const s of this.slots) s.worker.ref();
    const fill = () => {
      // Two chunks per thread in flight at most: bounded memory, no idle thread.
      while (next < chunks.length && inFlight.length < 2 * this.slots.length) {
        // Round robin: each thread works through its messages in order.
        const slot = this.slots[next % this.slots.length];
        const [start, count] = chunks[next++];
        inFlight.push(this.send(slot, tasks.slice(start, start + count), pipeline));
      }
    };
    try {
      for (let c = 0; c < chunks.length; c++) {
        fill();
        if (opts.signal?.aborted) throw new CancelledError();
        const m = await inFlight.shift()!;
        const [start, count] = chunks[c];
        if ('error' in m) {
          const e = m.error;
          if ('internal' in e)
            throw new Error(`image decoding thread failed on ${tasks[start + e.index]?.path}: ${e.internal}`);
          throw new InfluenceError(e.code as ErrorCode, e.message, e.place);
        }
        this.decoded += count;
        opts.onProgress?.('images', start + count, total);
        yield { start, count, features: m.features, facts: m.facts };
      }
    } finally {
      // Replies still due are awaited (and dropped) so that every thread is free for the next run.
      await Promise.all(inFlight);
      for (const s of this.slots) s.worker.unref();
    }
  }

  async close(): Promise<void> {
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}

/** One pool per process, its threads started on first use and not keeping the process alive. */
let shared: ImagePool | null = null;
export function imagePool(): ImagePool {
  shared ??= new ImagePool();
  return shared;
}

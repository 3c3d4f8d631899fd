/**
 * Talks to the engine's child process (`dist/worker.js`, forked, not a worker thread: a native
 * crash there must not take the extension host down). Restarts it after a crash and says so.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { FromWorker, Method, Requests, WorkerError } from '../protocol/engine';
import { PendingRequests } from '../protocol/message';

export class EngineError extends Error {
  constructor(readonly detail: WorkerError) {
    super(detail.message);
    this.name = 'EngineError';
  }
  get code(): string {
    return this.detail.code;
  }
}

type OnProgress = (stage: string, done: number, total: number) => void;

/** How long a cancelled request may take to stop before the process is killed. */
const CANCEL_GRACE_MS = 3000;

export class EngineClient {
  private child: ChildProcess | null = null;
  private readonly pending = new PendingRequests<unknown, OnProgress>();
  /** Cancelled requests whose reply has not come yet. */
  private readonly cancelled = new Set<number>();
  private disposed = false;

  constructor(
    private readonly workerPath: string,
    private readonly log: (line: string) => void,
  ) {}

  private start(): ChildProcess {
    const child = fork(this.workerPath, [], {
      // ORT telemetry off; the engine's output goes to our log, not the terminal.
      env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      execArgv: [],
    });
    child.stdout?.on('data', (d: Buffer) => this.log(`[engine] ${d.toString().trimEnd()}`));
    child.stderr?.on('data', (d: Buffer) => this.log(`[engine] ${d.toString().trimEnd()}`));
    child.on('message', (m: FromWorker) => this.onMessage(m));
    // A send to a process that has just died fails with an 'error' event, which unheard would
    // throw in the extension host; its requests fail on 'exit' below.
    child.on('error', (e) => this.log(`engine process: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = null;
      if (this.pending.size === 0 || this.disposed) return;
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      // Only a crash dies of these signals (a cancel that takes too long is a SIGKILL).
      const crash =
        signal !== null && signal !== 'SIGKILL' && signal !== 'SIGTERM'
          ? ' (a native crash, for example in onnxruntime on this model)'
          : '';
      this.log(`engine process ${why}; it restarts on the next request`);
      for (const p of this.pending.takeAll()) {
        p.reject(
          new EngineError({
            code: 'ENGINE_CRASHED',
            message: `the engine process ${why}${crash}; it restarts on the next run`,
            formatted: `engine ${why}`,
          }),
        );
      }
    });
    this.log(`engine process started (pid ${child.pid})`);
    return child;
  }

  private onMessage(m: FromWorker): void {
    if ('progress' in m) {
      this.pending.get(m.id)?.extra?.(m.progress.stage, m.progress.done, m.progress.total);
      return;
    }
    this.cancelled.delete(m.id);
    const p = this.pending.take(m.id);
    if (!p) return;
    if ('error' in m) p.reject(new EngineError(m.error));
    else p.resolve(m.result);
  }

  /** Sends a request; `signal` cancels it (and kills the process if it does not stop in time). */
  request<M extends Method>(
    method: M,
    params: Requests[M]['params'],
    opts: { signal?: AbortSignal; onProgress?: OnProgress } = {},
  ): Promise<Requests[M]['result']> {
    if (this.disposed) return Promise.reject(new Error('the engine is shut down'));
    if (opts.signal?.aborted)
      return Promise.reject(new EngineError({ code: 'CANCELLED', message: 'cancelled', formatted: 'cancelled' }));
    this.child ??= this.start();
    const child = this.child;
    const { id, reply } = this.pending.open(opts.onProgress);
    // Cancel answers at once; the engine gets a grace period to stop (its long loops are
    // synchronous), after which the process is killed and restarts on the next request.
    const onAbort = () => {
      const p = this.pending.take(id);
      if (!p) return;
      p.reject(new EngineError({ code: 'CANCELLED', message: 'cancelled', formatted: 'cancelled' }));
      this.cancelled.add(id);
      child.send({ cancel: id });
      const timer = setTimeout(() => {
        if (!this.cancelled.delete(id)) return;
        this.log(`engine did not stop within ${CANCEL_GRACE_MS} ms of a cancel; killing it`);
        child.kill('SIGKILL');
      }, CANCEL_GRACE_MS);
      timer.unref?.();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.send({ id, method, params });
    return reply as Promise<Requests[M]['result']>;
  }

  /** Kills the process (the tests' crash). */
  kill(): void {
    this.child?.kill('SIGKILL');
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  dispose(): void {
    this.disposed = true;
    this.child?.kill();
    this.child = null;
  }
}

/**
 * Runs fuzz cases in child processes (child.ts, under tsx), one case at a time per child, with a
 * watchdog per case: a case that does not answer within the time limit is a `hang` (its child is
 * killed and replaced), a child that exits during a case is a `crash` (a native abort, a fatal
 * out-of-memory, a process.exit). Synchronous infinite loops are caught too, since the watchdog is
 * in another process. Both are re-run alone in a fresh child to confirm. Failures can be minimized
 * (ddmin over the bytes) into a small input for the corpus.
 */
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { makeCase, specName, type CaseSpec } from './cases';
import type { Outcome } from './run';

export type Result = Outcome | { status: 'hang'; why: string } | { status: 'crash'; why: string };

export interface CaseResult {
  spec: CaseSpec;
  result: Result;
  /** Time the case took in its child (the time limit for a hang). */
  ms: number;
}

export interface PoolOptions {
  workers?: number;
  /** Per-case time limit in ms. */
  timeLimitMs?: number;
}

const CHILD = join(__dirname, 'child.ts');
const root = resolve(__dirname, '../..');

/** A bad result: anything but ok, a specific InfluenceError and a requested cancel. */
export function isBad(r: Result): boolean {
  return r.status === 'failure' || r.status === 'hang' || r.status === 'crash';
}

/** A result's class for counting: ok, error[CODE], cancelled, failure, hang, crash. */
export function resultClass(r: Result): string {
  return r.status === 'error' ? `error[${r.code}]` : r.status;
}

/** What a bad result is, for telling whether a smaller input still shows the same bug. */
export function signature(r: Result): string {
  if (r.status === 'failure') {
    const line = r.why.split('\n').find((l) => l.trim() !== '') ?? '';
    return `failure ${line.replace(/\d+/g, 'N').slice(0, 160)}`;
  }
  return r.status;
}

export function briefly(r: Result): string {
  if (r.status === 'error') return r.message.slice(0, 200);
  if (r.status === 'failure' || r.status === 'hang' || r.status === 'crash')
    return `${r.status}: ${r.why.split('\n').slice(0, 4).join(' | ').slice(0, 600)}`;
  return r.status;
}

interface Job {
  spec: CaseSpec;
  resolve: (r: CaseResult) => void;
}

class Slot {
  child: ChildProcess | null = null;
  ready: Promise<void> | null = null;
  job: { id: number; job: Job; timer: NodeJS.Timeout; t0: number } | null = null;
  stderr = '';
  last: CaseResult | null = null;
}

export class Pool {
  private readonly slots: Slot[];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  readonly timeLimitMs: number;

  constructor(opts: PoolOptions = {}) {
    const n = Math.max(1, opts.workers ?? 2);
    this.timeLimitMs = opts.timeLimitMs ?? 15000;
    this.slots = Array.from({ length: n }, () => new Slot());
  }

  run(spec: CaseSpec): Promise<CaseResult> {
    if (this.closed) return Promise.reject(new Error('pool closed'));
    return new Promise((resolve) => {
      this.queue.push({ spec, resolve });
      this.pump();
    });
  }

  runAll(specs: CaseSpec[], onResult?: (r: CaseResult, done: number) => void): Promise<CaseResult[]> {
    let done = 0;
    return Promise.all(
      specs.map((s) =>
        this.run(s).then((r) => {
          onResult?.(r, ++done);
          return r;
        }),
      ),
    );
  }

  close(): void {
    this.closed = true;
    for (const s of this.slots) {
      s.child?.kill('SIGKILL');
      s.child = null;
    }
  }

  private spawn(slot: Slot): void {
    const child = fork(CHILD, [], {
      cwd: root,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, ORT_DISABLE_TELEMETRY: '1' },
    });
    slot.child = child;
    slot.stderr = '';
    child.on('error', () => undefined); // a send to a child that just died; its exit says what happened
    child.stderr!.on('data', (d: Buffer) => {
      slot.stderr = (slot.stderr + d.toString()).slice(-4000);
    });
    slot.ready = new Promise((resolve) => {
      const onReady = (m: { ready?: boolean }) => {
        if (m.ready) {
          child.off('message', onReady);
          resolve();
        }
      };
      child.on('message', onReady);
      child.once('exit', () => resolve());
    });
    child.on('message', (m: { id?: number; outcome?: Outcome; ms?: number; fatal?: boolean }) => {
      if (slot.child !== child) return;
      if (m.fatal) {
        // The child is not to be trusted any more: a fresh one takes the next case.
        slot.child = null;
        child.kill('SIGKILL');
        if (m.id !== undefined && slot.job?.id === m.id) {
          this.finish(slot, { spec: slot.job.job.spec, result: m.outcome!, ms: performance.now() - slot.job.t0 });
          return;
        }
        // Between cases: the last case left something behind. A case sent meanwhile runs again elsewhere.
        if (slot.last) slot.last.result = m.outcome!;
        if (slot.job) {
          clearTimeout(slot.job.timer);
          this.queue.unshift(slot.job.job);
          slot.job = null;
        }
        this.pump();
        return;
      }
      if (m.id === undefined || !slot.job || slot.job.id !== m.id) return;
      this.finish(slot, { spec: slot.job.job.spec, result: m.outcome!, ms: m.ms ?? 0 });
    });
    child.on('exit', (code, signal) => {
      if (slot.child !== child) return;
      slot.child = null;
      const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
      const tail = slot.stderr.trim().split('\n').slice(-6).join('\n');
      if (slot.job) {
        this.finish(slot, {
          spec: slot.job.job.spec,
          result: { status: 'crash', why: `the process running the case ${how}${tail ? `\n${tail}` : ''}` },
          ms: performance.now() - slot.job.t0,
        });
      } else if (slot.last && code !== 0 && !this.closed) {
        // Died between cases: something the last case left behind (a timer, a dangling promise) blew up.
        slot.last.result = {
          status: 'crash',
          why: `the process ${how} after the case had answered${tail ? `\n${tail}` : ''}`,
        };
      }
      this.pump();
    });
  }

  private finish(slot: Slot, r: CaseResult): void {
    const j = slot.job!;
    clearTimeout(j.timer);
    slot.job = null;
    slot.last = r;
    j.job.resolve(r);
    this.pump();
  }

  private pump(): void {
    if (this.closed) return;
    for (const slot of this.slots) {
      if (slot.job || this.queue.length === 0) continue;
      if (!slot.child) this.spawn(slot);
      const job = this.queue.shift()!;
      const id = this.nextId++;
      const child = slot.child!;
      // The watchdog starts when the child is ready (start-up, tsx and onnxruntime loading, is not the case's time).
      slot.job = { id, job, timer: setTimeout(() => undefined, 0), t0: performance.now() };
      void slot.ready!.then(() => {
        if (!slot.job || slot.job.id !== id || slot.child !== child) return;
        slot.job.t0 = performance.now();
        slot.job.timer = setTimeout(() => {
          if (!slot.job || slot.job.id !== id) return;
          slot.child = null;
          child.kill('SIGKILL');
          this.finish(slot, {
            spec: job.spec,
            result: { status: 'hang', why: `no answer within ${this.timeLimitMs} ms` },
            ms: this.timeLimitMs,
          });
        }, this.timeLimitMs);
        if (child.connected) child.send({ id, spec: job.spec });
      });
    }
  }
}

/** Every model that is this one with one element of its structure removed; null if the bytes do not decode. */
function modelReductions(bytes: Buffer): Buffer[] | null {
  let base: ModelProto;
  try {
    base = fromBinary(ModelProtoSchema, bytes);
  } catch {
    return null;
  }
  const lists: ((m: ModelProto) => unknown[])[] = [
    (m) => m.graph?.node ?? [],
    (m) => m.graph?.initializer ?? [],
    (m) => m.graph?.input ?? [],
    (m) => m.graph?.output ?? [],
    (m) => m.graph?.valueInfo ?? [],
    (m) => m.metadataProps,
    (m) => m.opsetImport,
  ];
  (base.graph?.node ?? []).forEach((_, k) => lists.push((m) => m.graph!.node[k]?.attribute ?? []));
  const out: Buffer[] = [];
  for (const list of lists) {
    for (let i = 0; i < list(base).length; i++) {
      const m = fromBinary(ModelProtoSchema, bytes);
      list(m).splice(i, 1);
      out.push(Buffer.from(toBinary(ModelProtoSchema, m)));
    }
  }
  if (base.docString || base.producerName || base.producerVersion || base.graph?.docString || base.graph?.name) {
    const m = fromBinary(ModelProtoSchema, bytes);
    m.docString = m.producerName = m.producerVersion = '';
    if (m.graph) m.graph.docString = m.graph.name = '';
    out.push(Buffer.from(toBinary(ModelProtoSchema, m)));
  }
  return out;
}

/** Re-runs a hang or crash alone, in a fresh process: does it happen without the cases before it? */
export async function confirm(spec: CaseSpec, timeLimitMs: number): Promise<Result> {
  const pool = new Pool({ workers: 1, timeLimitMs });
  try {
    return (await pool.run(spec)).result;
  } finally {
    pool.close();
  }
}

/**
 * Shrinks a failing case's bytes while its signature stays the same (ddmin over byte ranges,
 * then single bytes), within a budget of runs. Returns the smallest input found.
 */
export async function minimize(
  spec: Exclude<CaseSpec, { kind: 'selftest' }>,
  want: string,
  opts: { timeLimitMs: number; maxRuns?: number; workers?: number; log?: (line: string) => void },
): Promise<{ bytes: Buffer; runs: number; fuzzCase: ReturnType<typeof makeCase> }> {
  const c = makeCase(spec);
  const dir = mkdtempSync(join(tmpdir(), 'il-fuzz-min-'));
  const pool = new Pool({ workers: opts.workers ?? 2, timeLimitMs: opts.timeLimitMs });
  const maxRuns = opts.maxRuns ?? 400;
  let runs = 0;
  let n = 0;
  const same = async (bytes: Buffer): Promise<boolean> => {
    runs++;
    const path = join(dir, `cand${n++}${c.ext}`);
    writeFileSync(path, bytes);
    const r = await pool.run({
      kind: 'file',
      reader: c.reader,
      path,
      ext: c.ext,
      name: 'candidate',
      opts: c.reader === 'onnx' ? undefined : c.opts,
    });
    rmSync(path, { force: true });
    // A runaway loop ends as a hang or, when it allocates as it goes, as a fatal out-of-memory crash.
    const got = signature(r.result);
    return got === want || (/^(hang|crash)$/.test(got) && /^(hang|crash)$/.test(want));
  };
  let best = c.bytes;
  try {
    if (c.reader === 'onnx' && modelReductions(best) !== null) {
      // A model is shrunk by its structure (cutting its bytes mostly breaks the protobuf): drop
      // nodes, tensors, inputs, outputs, annotations, attributes and metadata one by one.
      for (;;) {
        const cands = modelReductions(best) ?? [];
        let found: Buffer | null = null;
        const width = opts.workers ?? 2;
        for (let k = 0; k < cands.length && !found && runs < maxRuns; k += width) {
          const batch = cands.slice(k, k + width);
          const oks = await Promise.all(batch.map((b) => same(b)));
          const i = oks.indexOf(true);
          if (i >= 0) found = batch[i];
        }
        if (!found) break;
        best = found;
      }
      opts.log?.(`minimized ${specName(spec)} from ${c.bytes.length} to ${best.length} bytes in ${runs} runs`);
      return { bytes: best, runs, fuzzCase: c };
    }
    let parts = 2;
    while (best.length > 1 && runs < maxRuns) {
      const size = Math.ceil(best.length / parts);
      let reduced = false;
      // Try removing each part, a few at a time in parallel.
      for (let start = 0; start < best.length && runs < maxRuns; start += size * 2) {
        const cands = [start, start + size]
          .filter((s) => s < best.length)
          .map((s) => Buffer.concat([best.subarray(0, s), best.subarray(Math.min(best.length, s + size))]));
        const oks = await Promise.all(cands.map((b) => same(b)));
        const k = oks.indexOf(true);
        if (k >= 0) {
          best = cands[k];
          reduced = true;
          break;
        }
      }
      if (reduced) parts = Math.max(2, parts - 1);
      else if (size <= 1) break;
      else parts = Math.min(best.length, parts * 2);
    }
    opts.log?.(`minimized ${specName(spec)} from ${c.bytes.length} to ${best.length} bytes in ${runs} runs`);
  } finally {
    pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { bytes: best, runs, fuzzCase: c };
}

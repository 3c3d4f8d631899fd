/**
 * Runs one fuzz case in this process and classifies how it ended: `ok`, `error` (an InfluenceError,
 * with its CODE), `cancelled` (a CancelledError after the case's own abort) or `failure` (anything
 * else: another exception, or a broken invariant of what the reader returned). Hangs and crashes
 * are caught one level up, by the process that runs this one (harness.ts).
 *
 * Table cases are read from a file: readHeader, then TableReader.open + batches() with the case's
 * options, then again with the default chunk size, which must give the same outcome. What a reader
 * returns is checked: record offsets tile the file from the first record to its end, lines rise,
 * features are finite, labels are in range, the digest is the file's. Model cases run loadModel,
 * then Engine.open and one small batch. Either way the input file must be unchanged afterwards.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CancelledError, InfluenceError } from '../../src/core/errors';
import { readHeader, TableReader, type TableOptions } from '../../src/core/data/table';
import { loadModel } from '../../src/core/model/info';
import { Engine } from '../../src/core/model/engine';
import type { TableCase } from './tables';
import type { ModelCase } from './models';

export type FuzzCase = TableCase | ModelCase;

export type Outcome =
  | { status: 'ok'; note?: string }
  | { status: 'error'; code: string; message: string }
  | { status: 'cancelled' }
  | { status: 'failure'; why: string };

/** A thrown value as an outcome. */
function classify(e: unknown): Outcome {
  if (e instanceof InfluenceError) return { status: 'error', code: e.code, message: e.format() };
  if (e instanceof CancelledError) return { status: 'cancelled' };
  const why = e instanceof Error ? (e.stack ?? `${e.name}: ${e.message}`) : `non-Error thrown: ${String(e)}`;
  return { status: 'failure', why };
}

class Broken extends Error {}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Broken(`invariant broken: ${what}`);
}

/** Everything a full read gives, digested, so that two reads can be compared. */
interface ReadResult {
  columns: string[];
  featureCount: number;
  rows: number;
  digest: string;
}

async function readTable(
  path: string,
  bytes: Buffer,
  opts: TableOptions,
  cancelAfter: number | undefined,
): Promise<ReadResult> {
  const ac = new AbortController();
  let reads = 0;
  const o: TableOptions = { ...opts };
  if (cancelAfter !== undefined) {
    o.signal = ac.signal;
    o.onProgress = () => {
      if (reads++ === cancelAfter) ac.abort();
    };
    if (cancelAfter === 0) ac.abort();
  }
  const reader = await TableReader.open(path, o);
  const info = reader.info;
  const F = info.featureCount;
  check(Number.isSafeInteger(F) && F >= 0, `featureCount ${F}`);
  check(info.featureNames.length > 0 || F === 0, 'feature names');
  check(info.size === bytes.length, `size ${info.size} vs ${bytes.length}`);
  const limit = Math.min(opts.numClasses ?? opts.classes?.length ?? 2 ** 31, 2 ** 31);
  const h = createHash('sha256');
  let rows = 0;
  let lastOffset = -1;
  let lastLine = 0;
  for await (const b of reader.batches()) {
    check(b.start === rows, `batch start ${b.start} after ${rows} rows`);
    check(b.count > 0 && b.count <= (opts.batchSize ?? 4096), `batch count ${b.count}`);
    check(
      b.features.length === b.count * F &&
        b.labels.length === b.count &&
        b.lines.length === b.count &&
        b.offsets.length === b.count + 1,
      'batch array lengths',
    );
    check(
      lastOffset < 0 || b.offsets[0] === lastOffset,
      `batch starts at byte ${b.offsets[0]}, the previous one ended at ${lastOffset}`,
    );
    for (let i = 0; i < b.count; i++) {
      check(
        b.offsets[i + 1] > b.offsets[i],
        `row ${rows + i}: offsets ${b.offsets[i]}..${b.offsets[i + 1]} do not rise`,
      );
      check(b.lines[i] > lastLine, `row ${rows + i}: line ${b.lines[i]} after line ${lastLine}`);
      lastLine = b.lines[i];
      const label = b.labels[i];
      check(info.hasLabel ? label >= 0 && label < limit : label === -1, `row ${rows + i}: label ${label}`);
    }
    for (const v of b.features) check(Number.isFinite(v), 'a non-finite feature');
    check(b.offsets[0] >= 0 && b.offsets[b.count] <= bytes.length, 'offsets inside the file');
    lastOffset = b.offsets[b.count];
    h.update(new Uint8Array(b.features.buffer, b.features.byteOffset, b.features.byteLength));
    h.update(new Uint8Array(b.labels.buffer, b.labels.byteOffset, b.labels.byteLength));
    h.update(new Uint8Array(b.lines.buffer, b.lines.byteOffset, b.lines.byteLength));
    h.update(new Uint8Array(b.offsets.buffer, b.offsets.byteOffset, b.offsets.byteLength));
    rows += b.count;
  }
  const s = reader.summary();
  check(s.rows === rows, `summary rows ${s.rows} vs ${rows}`);
  check(s.sha256 === createHash('sha256').update(bytes).digest('hex'), 'summary sha256 is not the file digest');
  check(
    lastOffset < 0 || lastOffset === bytes.length,
    `the last record ends at byte ${lastOffset}, the file at ${bytes.length}`,
  );
  return { columns: info.columns, featureCount: F, rows, digest: h.digest('hex') };
}

async function attempt<T>(
  fn: () => Promise<T>,
): Promise<{ value: T; outcome: Outcome } | { value: null; outcome: Outcome }> {
  try {
    return { value: await fn(), outcome: { status: 'ok' } };
  } catch (e) {
    if (e instanceof Broken) return { value: null, outcome: { status: 'failure', why: e.message } };
    return { value: null, outcome: classify(e) };
  }
}

function sameOutcome(a: Outcome, b: Outcome): boolean {
  if (a.status !== b.status) return false;
  if (a.status === 'error' && b.status === 'error') return a.code === b.code && a.message === b.message;
  return true;
}

async function runTable(c: TableCase, path: string): Promise<Outcome> {
  const { cancelAfter, ...rest } = c.opts;
  const opts: TableOptions = rest;
  const header = await attempt(() => readHeader(path, opts.format));
  if (header.outcome.status === 'failure') return header.outcome;
  const main = await attempt(() => readTable(path, c.bytes, opts, cancelAfter));
  if (main.outcome.status === 'failure') return main.outcome;
  if (cancelAfter === undefined && opts.chunkSize !== undefined) {
    // The read size must not matter: the same rows, or the same error at the same place.
    const ref = await attempt(() => readTable(path, c.bytes, { ...opts, chunkSize: undefined }, undefined));
    if (ref.outcome.status === 'failure') return ref.outcome;
    if (!sameOutcome(main.outcome, ref.outcome)) {
      return {
        status: 'failure',
        why: `chunkSize ${opts.chunkSize} gives ${describe(main.outcome)}, the default gives ${describe(ref.outcome)}`,
      };
    }
    if (main.value && ref.value && JSON.stringify(main.value) !== JSON.stringify(ref.value)) {
      return { status: 'failure', why: `chunkSize ${opts.chunkSize} reads other rows than the default chunk size` };
    }
  }
  if (main.value && header.value && JSON.stringify(header.value) !== JSON.stringify(main.value.columns)) {
    return {
      status: 'failure',
      why: `readHeader gives ${JSON.stringify(header.value).slice(0, 200)}, the reader ${JSON.stringify(main.value.columns).slice(0, 200)}`,
    };
  }
  if (main.value) return { status: 'ok', note: `${main.value.rows} rows` };
  return main.outcome;
}

function describe(o: Outcome): string {
  if (o.status === 'error') return o.message;
  if (o.status === 'failure') return `failure ${o.why.split('\n')[0]}`;
  return o.status;
}

async function runModel(path: string): Promise<Outcome> {
  const loaded = await attempt(() => loadModel(path));
  if (loaded.value === null) return loaded.outcome;
  const info = loaded.value.info;
  const { C, D, W, b } = info.head;
  try {
    check(Number.isSafeInteger(info.F) && info.F >= 1, `F = ${info.F}`);
    check(Number.isSafeInteger(C) && C >= 1 && Number.isSafeInteger(D) && D >= 1, `head C = ${C}, D = ${D}`);
    check(W.length === C * D && (b === null || b.length === C), 'head weight sizes');
    check(Number.isFinite(info.head.scale) && info.head.scale !== 0, `head scale ${info.head.scale}`);
  } catch (e) {
    return { status: 'failure', why: (e as Error).message };
  }
  const opened = await attempt(() => Engine.open(path));
  if (opened.value === null) {
    // Engine.open loads the model again: it cannot fail where loadModel passed unless the graph does not compile or run.
    return opened.outcome;
  }
  const engine = opened.value;
  try {
    // One small batch, as a data file of the model's width would give it (only for widths a file can have).
    if (info.F <= 100000) {
      const rows = 2;
      const x =
        info.inputType === 'float64'
          ? new Float64Array(rows * info.F).fill(0.5)
          : new Float32Array(rows * info.F).fill(0.5);
      const run = await attempt(() => engine.runBatch(x, new Int32Array(rows), rows));
      if (run.outcome.status !== 'ok') return run.outcome;
    }
    return { status: 'ok', note: engine.runBatchSize === null ? 'batch-free' : `batch ${engine.runBatchSize}` };
  } finally {
    await engine.release();
  }
}

/**
 * Writes the case to `dir`, runs it and checks that the file is byte for byte what was written
 * (and not touched: same mtime) afterwards.
 */
export async function runCase(c: FuzzCase, dir: string): Promise<Outcome> {
  const path = join(dir, `case${c.ext}`);
  writeFileSync(path, c.bytes);
  const before = statSync(path).mtimeMs;
  let out: Outcome;
  try {
    out = c.reader === 'onnx' ? await runModel(path) : await runTable(c, path);
  } catch (e) {
    out = { status: 'failure', why: `uncaught by the case runner: ${describe(classify(e))}` };
  }
  const after = readFileSync(path);
  if (!after.equals(c.bytes) || statSync(path).mtimeMs !== before) {
    return { status: 'failure', why: `the reader changed its input file (outcome was ${describe(out)})` };
  }
  return out;
}

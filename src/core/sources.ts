/**
 * Forward rows of the sources other than text tables (data/source.ts): image folders, single
 * images, manifests, Parquet and Arrow files. Each source is listed first (cheap); then, through the
 * cache, only the files whose stamp changed since the cached run are read again: one image, or one
 * shard. An unchanged stamp is size, mtime, inode and ctime; when only size and mtime match, the
 * content hash decides. Images are decoded in parallel (images/pool.ts), in bounded chunks.
 */
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { InfluenceError, throwIfAborted, type Progress } from './errors';
import type { RowsCache } from './cache/store';
import { hashFile, type CacheKeyParts } from './cache/keys';
import { openColumns, type ColumnFile } from './data/columnar';
import type { ImageFacts, ImageTask } from './data/images/load';
import { imagePool } from './data/images/pool';
import { describePipeline, resolvePipeline, type PreprocessConfig, type Pipeline } from './data/images/preprocess';
import { LabelMap } from './data/columnLabels';
import type { RowLocator, StampSha } from './data/locator';
import {
  columnFiles,
  listImages,
  numbersOfRow,
  planColumns,
  sourceKind,
  type ColumnPlan,
  type ImageListing,
  type SourceInfo,
  type SourceKind,
  type SourceOptions,
} from './data/source';
import { formatFromPath, readHeader, type TableSummary } from './data/table';
import type { Engine, ForwardRow, ForwardRows } from './model/engine';
import { lossAndSignal } from './task/loss';

/** What a run asks of a source beyond the table options: the image column and the preprocessing from settings or flags. */
export interface ImageRequest {
  imageColumn?: string;
  preprocess?: PreprocessConfig;
}

/** Forward rows of a source, with what was read this time. */
export interface SourceRows extends ForwardRows {
  locator: RowLocator;
  kind: SourceKind;
  /** Files (images or shards) read this time, and reused from the cache. */
  read: number;
  reused: number;
  notes: string[];
  /** The image preprocessing, when the rows are images. */
  preprocess: PreprocessSummary | null;
  /** The cache key of these rows, and whether they differ from the cached entry (which is then stored again). */
  key: CacheKeyParts;
  changed: boolean;
}

/** The preprocessing as the JSON and the panel show it. */
export interface PreprocessSummary {
  steps: string[];
  pipeline: Omit<Pipeline, 'from'>;
  from: Pipeline['from'];
}

interface RunOpts {
  signal?: AbortSignal;
  onProgress?: Progress;
  batchSize?: number;
  cache?: RowsCache | null;
}

/** Whether a path is a text table (read by TableReader as before) rather than another source. */
export async function isTable(path: string, table: SourceOptions): Promise<boolean> {
  try {
    return (await sourceKind(path, table)) === 'table';
  } catch (e) {
    // A missing file is the table reader's error to report, as before.
    if (e instanceof InfluenceError && (e.code === 'FILE_NOT_FOUND' || e.code === 'FILE_UNREADABLE')) return true;
    throw e;
  }
}

function modelPipeline(
  engine: Engine,
  preprocess: PreprocessConfig | undefined,
): { pipeline: Pipeline; notes: string[] } {
  const info = engine.info;
  const metadata = engine.model.proto.metadataProps.find((m) => m.key === 'influence_lens.preprocess')?.value;
  return resolvePipeline(
    { path: info.path, inputDims: info.inputDims, F: info.F, float64: info.inputType === 'float64', metadata },
    preprocess,
  );
}

export function summarize(p: Pipeline, hf: boolean): PreprocessSummary {
  const { from, ...pipeline } = p;
  return { steps: describePipeline(p, hf), pipeline, from };
}

function statOrNull(path: string): fs.Stats | null {
  try {
    return fs.statSync(path);
  } catch {
    return null;
  }
}

/** Is a file as it was when read (stamp), deciding by content hash when only size and mtime agree? */
async function unchanged(path: string, was: StampSha, signal?: AbortSignal): Promise<StampSha | null> {
  const st = statOrNull(path);
  if (!st || st.size !== was.size || st.mtimeMs !== was.mtimeMs) return null;
  const now = { size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, ino: st.ino };
  if (st.ino === was.ino && st.ctimeMs === was.ctimeMs) return { ...now, sha256: was.sha256 };
  if (!was.sha256) return null;
  const sha = await hashFile(path, signal).catch(() => null);
  return sha === was.sha256 ? { ...now, sha256: sha } : null;
}

function sourceKey(
  engine: Engine,
  path: string,
  kind: SourceKind,
  table: SourceOptions,
  extra: unknown,
): CacheKeyParts {
  return {
    modelSha256: engine.info.sha256,
    dataPath: path,
    options: {
      source: kind,
      labelColumn: table.labelColumn ?? 'label',
      features: table.features ?? null,
      ignoreColumns: table.ignoreColumns,
      classes: table.classes ?? null,
      numClasses: table.numClasses,
      imageColumn: table.imageColumn ?? null,
      requireLabel: table.requireLabel ?? true,
      extra,
    },
  };
}

/** Summary of a source's rows: the hash covers every row's file hash, row and label. */
function summaryOf(n: number, locator: RowLocator, labels: Int32Array): TableSummary {
  const h = createHash('sha256');
  const rowBuf = Buffer.alloc(12);
  for (let i = 0; i < n; i++) {
    h.update(locator.stamps[locator.file[i]].sha256 ?? locator.files[locator.file[i]]);
    rowBuf.writeInt32LE(locator.fileRow ? locator.fileRow[i] : 0, 0);
    rowBuf.writeInt32LE(labels[i], 4);
    h.update(rowBuf);
  }
  let size = 0;
  let mtimeMs = 0;
  let ctimeMs = 0;
  for (const s of locator.stamps) {
    size += s.size;
    mtimeMs = Math.max(mtimeMs, s.mtimeMs);
    ctimeMs = Math.max(ctimeMs, s.ctimeMs);
  }
  return { rows: n, sha256: h.digest('hex'), size, mtimeMs, ctimeMs, ino: 0 };
}

/** Notes on what decoding did: images converted between grey and RGB. */
function conversionNotes(kinds: (string | null)[], p: Pipeline, what: string): string[] {
  let toGrey = 0;
  let toRgb = 0;
  const greyModes = new Set(['L', 'LA', '1', 'I;16']);
  for (const k of kinds) {
    if (!k) continue;
    const grey = greyModes.has(k.split(' ')[1]);
    if (p.channels === 'grey' && !grey) toGrey++;
    if ((p.channels === 'rgb' || p.channels === 'bgr') && grey) toRgb++;
  }
  const notes: string[] = [];
  if (toGrey)
    notes.push(
      `${toGrey.toLocaleString('en-US')} colour image${toGrey === 1 ? '' : 's'} in ${what} ${toGrey === 1 ? 'was' : 'were'} converted to grey for the model's one channel (ITU-R 601-2 luma, as Pillow's convert("L"))`,
    );
  if (toRgb)
    notes.push(
      `${toRgb.toLocaleString('en-US')} grey image${toRgb === 1 ? '' : 's'} in ${what} ${toRgb === 1 ? 'was' : 'were'} converted to RGB for the model's three channels (the grey value in each channel, as Pillow's convert("RGB"))`,
    );
  return notes;
}

/** Accumulates rows' features and runs the model over them in batches, writing h and z at the rows' places. */
class Forwarder {
  private feats: Float32Array | Float64Array;
  private targets: number[][] = [];
  private count = 0;

  constructor(
    private readonly engine: Engine,
    private readonly h: Float32Array,
    private readonly z: Float64Array,
    private readonly batch: number,
    private readonly where: (target: number) => { file: string; line?: number },
  ) {
    const F = engine.info.F;
    this.feats = engine.info.inputType === 'float64' ? new Float64Array(batch * F) : new Float32Array(batch * F);
  }

  /** Adds one item's features (F values at src[at…]) for every row in `rows`. */
  async add(src: Float32Array | Float64Array, at: number, rows: number[]): Promise<void> {
    const F = this.engine.info.F;
    this.feats.set(src.subarray(at, at + F), this.count * F);
    this.targets.push(rows);
    this.count++;
    if (this.count === this.batch) await this.flush();
  }

  async flush(): Promise<void> {
    const k = this.count;
    if (k === 0) return;
    const { C, D } = this.engine.info.head;
    const out = await this.engine.runBatch(this.feats, new Int32Array(k), k);
    for (let r = 0; r < k; r++) {
      for (let c = 0; c < C; c++) {
        if (!Number.isFinite(out.z[r * C + c]))
          throw new InfluenceError(
            'MODEL_NOT_FINITE',
            'the model produced a non-finite logit for this row',
            this.where(this.targets[r][0]),
          );
      }
      for (const i of this.targets[r]) {
        this.h.set(out.h.subarray(r * D, (r + 1) * D), i * D);
        this.z.set(out.z.subarray(r * C, (r + 1) * C), i * C);
      }
    }
    this.count = 0;
    this.targets = [];
  }
}

function sourceInfo(
  path: string,
  format: SourceInfo['format'],
  columns: string[],
  labelColumn: string,
  hasLabel: boolean,
  F: number,
  s: TableSummary,
): SourceInfo {
  return {
    path,
    format,
    columns,
    labelColumn,
    hasLabel,
    featureNames: [],
    featureCount: F,
    size: s.size,
    mtimeMs: s.mtimeMs,
    ctimeMs: s.ctimeMs,
    ino: s.ino,
  };
}

function formatOf(kind: SourceKind, path: string): SourceInfo['format'] {
  if (kind === 'imagefolder' || kind === 'image') return kind;
  return formatFromPath(path) ?? (/\.(parquet|pq)$/i.test(path) ? 'parquet' : 'arrow');
}

/**
 * The forward rows of a non-table source, through the cache: files unchanged since the cached run
 * keep their rows; the others are read again.
 */
export async function readSourceRows(
  engine: Engine,
  path: string,
  table: SourceOptions,
  request: ImageRequest,
  run: RunOpts,
): Promise<SourceRows> {
  const { opts, kind } = await sourceOf(engine, path, table, request);
  if (kind === 'columns') return readColumnRows(engine, path, opts, request, run);
  return readImageRows(engine, path, kind, opts, request, run);
}

/** A non-table source's options and kind: images (a folder, one image, a manifest) or columns. */
async function sourceOf(
  engine: Engine,
  path: string,
  table: SourceOptions,
  request: ImageRequest,
): Promise<{ opts: SourceOptions; kind: ImageListing['kind'] | 'columns' }> {
  const opts: SourceOptions = { ...engine.tableOptions(table), imageColumn: request.imageColumn ?? table.imageColumn };
  const kind = await sourceKind(path, opts);
  if (kind !== 'columns') return { opts, kind: kind as ImageListing['kind'] };
  // A Parquet or Arrow manifest is listed like a text one.
  const first = await openColumns(columnFiles(path)[0]);
  try {
    return { opts, kind: (await planColumns(first, opts)).mode === 'manifest' ? 'manifest' : 'columns' };
  } finally {
    await first.close();
  }
}

/**
 * A non-table source's features in row order, in chunks of at most `batchSize` rows, with no
 * cache and no model run: beyond the head, the deep pass runs its own graph on them, over the rows
 * (labels, lines, files) that readSourceRows gave.
 */
export async function* sourceFeatures(
  engine: Engine,
  path: string,
  table: SourceOptions,
  request: ImageRequest,
  run: RunOpts,
): AsyncGenerator<{ start: number; features: Float32Array | Float64Array; count: number }> {
  const { opts, kind } = await sourceOf(engine, path, table, request);
  const F = engine.info.F;
  const B = Math.max(1, Math.min(run.batchSize ?? 512, 512));
  let start = 0;
  /** A part's rows in chunks of at most B, numbered on from the rows before it. */
  function* split(features: Float32Array | Float64Array, count: number) {
    for (let a = 0; a < count; a += B) {
      const k = Math.min(B, count - a);
      yield { start: start + a, features: features.subarray(a * F, (a + k) * F), count: k };
    }
    start += count;
  }
  if (kind !== 'columns') {
    const listing = await listImages(path, kind, opts);
    const { pipeline } = modelPipeline(engine, request.preprocess);
    // One task per row, in row order (a manifest may list an image twice).
    const tasks: ImageTask[] = Array.from({ length: listing.n }, (_, i) => ({
      path: listing.files[listing.file[i]],
      ...(listing.manifest ? { place: { file: listing.manifest, line: listing.lines[i] } } : {}),
    }));
    for await (const chunk of imagePool().load(tasks, pipeline, { signal: run.signal, onProgress: run.onProgress }))
      yield* split(chunk.features, chunk.count);
    return;
  }
  let image: Pipeline | null = null;
  for (const file of columnFiles(path)) {
    const cf = await openColumns(file);
    try {
      const plan = await planColumns(cf, opts);
      if (plan.mode === 'manifest') throw new InfluenceError('FEATURE_SHAPE', 'a shard is a manifest', { file });
      if (plan.mode === 'images') image ??= modelPipeline(engine, request.preprocess).pipeline;
      for await (const part of readShard(cf, plan, null, image, run)) yield* split(part.features, part.count);
    } finally {
      await cf.close();
    }
  }
}

async function readImageRows(
  engine: Engine,
  path: string,
  kind: ImageListing['kind'],
  opts: SourceOptions,
  request: ImageRequest,
  run: RunOpts,
): Promise<SourceRows> {
  const listing = await listImages(path, kind, opts);
  const { pipeline, notes: configNotes } = modelPipeline(engine, request.preprocess);
  const { C, D, b } = engine.info.head;
  const { n, files } = listing;
  const key = sourceKey(engine, path, kind, opts, { pipeline: { ...pipeline, from: undefined } });
  const prev = run.cache ? await run.cache.loadSource(key, run.signal) : null;
  const stamps: (StampSha | null)[] = new Array(files.length).fill(null);
  const kinds: (string | null)[] = new Array(files.length).fill(null);
  const reuseRow = new Int32Array(files.length).fill(-1);
  if (prev?.locator && prev.locator.kind === 'images') {
    const old = prev.locator;
    const oldIndex = new Map(old.files.map((f, j) => [f, j]));
    const firstRow = new Int32Array(old.files.length).fill(-1);
    for (let r = prev.n - 1; r >= 0; r--) firstRow[old.file[r]] = r;
    for (let f = 0; f < files.length; f++) {
      const j = oldIndex.get(files[f]);
      if (j === undefined || firstRow[j] < 0) continue;
      const now = await unchanged(files[f], old.stamps[j], run.signal);
      if (!now) continue;
      stamps[f] = now;
      kinds[f] = old.kinds?.[j] ?? null;
      reuseRow[f] = firstRow[j];
    }
  }
  const h = new Float32Array(n * D);
  const z = new Float64Array(n * C);
  const rowsOf: number[][] = Array.from({ length: files.length }, () => []);
  for (let i = 0; i < n; i++) rowsOf[listing.file[i]].push(i);
  let reused = 0;
  const todo: number[] = [];
  for (let f = 0; f < files.length; f++) {
    const r = reuseRow[f];
    if (r < 0) {
      todo.push(f);
      continue;
    }
    reused++;
    for (const i of rowsOf[f]) {
      h.set(prev!.h.subarray(r * D, (r + 1) * D), i * D);
      z.set(prev!.z.subarray(r * C, (r + 1) * C), i * C);
    }
  }
  const where = (f: number) =>
    listing.manifest ? { file: listing.manifest, line: listing.lines[rowsOf[f][0]] } : { file: files[f] };
  const tasks: ImageTask[] = todo.map((f) => ({
    path: files[f],
    ...(listing.manifest
      ? { place: { file: listing.manifest, line: listing.lines[rowsOf[f][0]] } }
      : kind === 'manifest'
        ? { place: { file: path, line: 0 } }
        : {}),
  }));
  const fwd = new Forwarder(engine, h, z, Math.min(run.batchSize ?? 512, 512), (f) => where(f));
  for await (const chunk of imagePool().load(tasks, pipeline, { signal: run.signal, onProgress: run.onProgress })) {
    throwIfAborted(run.signal);
    for (let k = 0; k < chunk.count; k++) {
      const f = todo[chunk.start + k];
      const facts: ImageFacts = chunk.facts[k];
      stamps[f] = { ...(facts.stamp ?? { size: 0, mtimeMs: 0, ctimeMs: 0, ino: 0 }), sha256: facts.sha256 };
      kinds[f] = facts.kind;
      await fwd.add(chunk.features, k * pipeline.features, rowsOf[f]);
    }
  }
  await fwd.flush();
  const labels = Int32Array.from(listing.labels);
  const loss = new Float64Array(n);
  const g = new Float64Array(n * C);
  lossAndSignal(engine.task, z, labels, n, loss, g);
  const locator: RowLocator = {
    kind: 'images',
    files,
    stamps: stamps as StampSha[],
    kinds: kinds as string[],
    file: listing.file,
    fileRow: null,
    manifest: listing.manifest,
  };
  const summary = summaryOf(n, locator, labels);
  const info = sourceInfo(
    path,
    formatOf(kind, path),
    listing.columns,
    listing.labelColumn,
    listing.labelled,
    engine.info.F,
    summary,
  );
  const notes = [...configNotes, ...listing.notes, ...conversionNotes(kinds, pipeline, path)];
  return {
    n,
    C,
    D,
    bias: b !== null,
    h,
    g,
    z,
    loss,
    labels,
    lines: listing.lines,
    offsets: listing.offsets,
    locator,
    table: info,
    summary,
    kind,
    read: todo.length,
    reused,
    notes,
    preprocess: summarize(pipeline, false),
    key,
    changed:
      !prev ||
      todo.length > 0 ||
      prev.n !== n ||
      stamps.some((st, f) => !sameStamp(st, prev.locator?.stamps[prev.locator.file[reuseRow[f]]])),
  };
}

/** Rows of one columnar file as features and labels, chunk by chunk (images decoded in the pool). */
async function* readShard(
  cf: ColumnFile,
  plan: Exclude<ColumnPlan, { mode: 'manifest' }>,
  labels: LabelMap | null,
  pipeline: Pipeline | null,
  run: RunOpts,
): AsyncGenerator<{
  features: Float32Array | Float64Array;
  labels: Int32Array;
  count: number;
  facts: ImageFacts[] | null;
}> {
  const cols = plan.mode === 'numbers' ? plan.columns : [plan.column];
  const ask = plan.label ? [plan.label, ...cols] : cols;
  const offset = plan.label ? 1 : 0;
  let at = 0;
  for await (const rows of cf.batches(ask)) {
    throwIfAborted(run.signal);
    const k = rows.length;
    const y = new Int32Array(k);
    for (let r = 0; r < k; r++) y[r] = labels ? labels.id(rows[r][0], at + r) : -1;
    if (plan.mode === 'numbers') {
      const F = plan.featureCount;
      const feats = new Float32Array(k * F);
      for (let r = 0; r < k; r++) numbersOfRow(plan, rows[r], offset, feats, r * F, cf.path, at + r);
      yield { features: feats, labels: y, count: k, facts: null };
    } else {
      const tasks: ImageTask[] = rows.map((row, r) => {
        const v = row[offset] as Uint8Array | { bytes?: Uint8Array | null; path?: string | null } | null;
        const bytes = v instanceof Uint8Array ? v : (v?.bytes ?? null);
        const name = `${cf.path} row ${at + r}${!(v instanceof Uint8Array) && v?.path ? ` (${v.path})` : ''}`;
        if (!bytes)
          throw new InfluenceError(
            'IMAGE_CORRUPT',
            `row ${at + r} (0-based): the image column ${JSON.stringify(plan.column)} holds no image bytes`,
            { file: cf.path },
          );
        return { path: name, bytes, hf: plan.hf };
      });
      for await (const chunk of imagePool().load(tasks, pipeline!, { signal: run.signal })) {
        yield {
          features: chunk.features,
          labels: y.subarray(chunk.start, chunk.start + chunk.count),
          count: chunk.count,
          facts: chunk.facts,
        };
      }
    }
    at += k;
  }
}

async function readColumnRows(
  engine: Engine,
  path: string,
  opts: SourceOptions,
  request: ImageRequest,
  run: RunOpts,
): Promise<SourceRows> {
  const shards = columnFiles(path);
  const { C, D, b } = engine.info.head;
  const first = await openColumns(shards[0]);
  let plan: ColumnPlan;
  try {
    plan = await planColumns(first, opts);
  } finally {
    await first.close();
  }
  if (plan.mode === 'manifest') throw new Error('a manifest is read as images');
  const image = plan.mode === 'images' ? modelPipeline(engine, request.preprocess) : null;
  const F = plan.mode === 'numbers' ? plan.featureCount : engine.info.F;
  const info0 = first;
  const classes = opts.classes ?? (plan.label ? (info0.hf?.classNames[plan.label] ?? null) : null);
  const notes: string[] = [...(image?.notes ?? [])];
  if (plan.mode === 'numbers' && plan.skipped.length)
    notes.push(
      `column${plan.skipped.length === 1 ? '' : 's'} ${plan.skipped.map((c) => `"${c.name}" (${c.type})`).join(', ')} of ${path} ${plan.skipped.length === 1 ? 'is' : 'are'} not numeric and not a feature`,
    );
  if (plan.mode === 'images')
    notes.push(
      `reading encoded images from the column "${plan.column}" of ${path}${plan.hf ? ' (a Hugging Face datasets Image column)' : ''}`,
    );
  engine.checkWidth({
    path,
    format: 'parquet',
    columns: info0.columns.map((c) => c.name),
    labelColumn: opts.labelColumn ?? 'label',
    hasLabel: plan.label !== null,
    featureNames: plan.mode === 'numbers' ? plan.columns : [],
    featureCount: F,
    size: 0,
    mtimeMs: 0,
    ctimeMs: 0,
    ino: 0,
  });
  const key = sourceKey(engine, path, 'columns', opts, {
    plan,
    pipeline: image ? { ...image.pipeline, from: undefined } : null,
    classes,
  });
  const prev = run.cache ? await run.cache.loadSource(key, run.signal) : null;
  const old = prev?.locator?.kind === 'shards' ? prev.locator : null;
  // Per shard: its rows [from, to) in the final order, filled from the cache or read.
  const hParts: Float32Array[] = [];
  const zParts: Float64Array[] = [];
  const yParts: Int32Array[] = [];
  const stamps: StampSha[] = [];
  const counts: number[] = [];
  let read = 0;
  let reused = 0;
  for (let s = 0; s < shards.length; s++) {
    throwIfAborted(run.signal);
    const file = shards[s];
    const j = old ? old.files.indexOf(resolve(file)) : -1;
    const same = j >= 0 ? await unchanged(file, old!.stamps[j], run.signal) : null;
    if (same && prev) {
      const rows: number[] = [];
      for (let r = 0; r < prev.n; r++) if (old!.file[r] === j) rows.push(r);
      const hp = new Float32Array(rows.length * D);
      const zp = new Float64Array(rows.length * C);
      const yp = new Int32Array(rows.length);
      rows.forEach((r, k) => {
        hp.set(prev.h.subarray(r * D, (r + 1) * D), k * D);
        zp.set(prev.z.subarray(r * C, (r + 1) * C), k * C);
        yp[k] = prev.labels[r];
      });
      hParts.push(hp);
      zParts.push(zp);
      yParts.push(yp);
      stamps.push(same);
      counts.push(rows.length);
      reused++;
      continue;
    }
    read++;
    const st = statOrNull(file);
    const cf = await openColumns(file);
    try {
      const shardPlan: ColumnPlan = s === 0 ? plan : await planColumns(cf, opts);
      if (
        shardPlan.mode !== plan.mode ||
        (plan.mode === 'numbers' && shardPlan.mode === 'numbers' && shardPlan.featureCount !== plan.featureCount)
      ) {
        throw new InfluenceError('FEATURE_SHAPE', `this file's columns do not match those of ${shards[0]}`, { file });
      }
      const labels = plan.label ? new LabelMap(file, plan.label, classes, opts.numClasses) : null;
      const hs: Float32Array[] = [];
      const zs: Float64Array[] = [];
      const ys: Int32Array[] = [];
      let count = 0;
      for await (const part of readShard(
        cf,
        shardPlan as Exclude<ColumnPlan, { mode: 'manifest' }>,
        labels,
        image?.pipeline ?? null,
        run,
      )) {
        const hp = new Float32Array(part.count * D);
        const zp = new Float64Array(part.count * C);
        const B = Math.max(1, run.batchSize ?? 4096);
        for (let a = 0; a < part.count; a += B) {
          const k = Math.min(B, part.count - a);
          const out = await engine.runBatch(part.features.subarray(a * F, (a + k) * F), new Int32Array(k), k);
          for (let q = 0; q < k * C; q++) {
            if (!Number.isFinite(out.z[q]))
              throw new InfluenceError(
                'MODEL_NOT_FINITE',
                `the model produced a non-finite logit for row ${count + a + Math.floor(q / C)}`,
                { file },
              );
          }
          hp.set(out.h, a * D);
          zp.set(out.z, a * C);
        }
        hs.push(hp);
        zs.push(zp);
        ys.push(Int32Array.from(part.labels));
        count += part.count;
        run.onProgress?.('read', s + 1, shards.length);
      }
      hParts.push(concat(hs, (l) => new Float32Array(l)));
      zParts.push(concat(zs, (l) => new Float64Array(l)));
      yParts.push(concat(ys, (l) => new Int32Array(l)));
      counts.push(count);
      const sha = await hashFile(file, run.signal);
      stamps.push({
        size: st?.size ?? 0,
        mtimeMs: st?.mtimeMs ?? 0,
        ctimeMs: st?.ctimeMs ?? 0,
        ino: st?.ino ?? 0,
        sha256: sha,
      });
    } finally {
      await cf.close();
    }
  }
  const n = counts.reduce((a, c) => a + c, 0);
  const h = concat(hParts, (l) => new Float32Array(l));
  const z = concat(zParts, (l) => new Float64Array(l));
  const labels = concat(yParts, (l) => new Int32Array(l));
  const file = new Int32Array(n);
  const fileRow = new Int32Array(n);
  let at = 0;
  counts.forEach((c, s) => {
    for (let r = 0; r < c; r++) {
      file[at + r] = s;
      fileRow[at + r] = r;
    }
    at += c;
  });
  const loss = new Float64Array(n);
  const g = new Float64Array(n * C);
  lossAndSignal(engine.task, z, labels, n, loss, g);
  const locator: RowLocator = {
    kind: 'shards',
    files: shards.map((s) => resolve(s)),
    stamps,
    kinds: null,
    file,
    fileRow,
    manifest: null,
  };
  const summary = summaryOf(n, locator, labels);
  const format = /\.(parquet|pq)$/i.test(shards[0]) ? 'parquet' : 'arrow';
  const info = sourceInfo(
    path,
    format,
    info0.columns.map((c) => c.name),
    opts.labelColumn ?? 'label',
    plan.label !== null,
    F,
    summary,
  );
  if (plan.mode === 'numbers') info.featureNames = plan.columns;
  return {
    n,
    C,
    D,
    bias: b !== null,
    h,
    g,
    z,
    loss,
    labels,
    lines: new Int32Array(n),
    offsets: new Float64Array(n + 1),
    locator,
    table: info,
    summary,
    kind: 'columns',
    read,
    reused,
    notes,
    preprocess: image ? summarize(image.pipeline, plan.mode === 'images' && plan.hf) : null,
    key,
    changed:
      !prev ||
      read > 0 ||
      prev.n !== n ||
      stamps.some((st, f) => !sameStamp(st, old?.stamps[old.files.indexOf(resolve(shards[f]))])),
  };
}

function sameStamp(a: StampSha | null | undefined, b: StampSha | null | undefined): boolean {
  return (
    !!a &&
    !!b &&
    a.size === b.size &&
    a.mtimeMs === b.mtimeMs &&
    a.ctimeMs === b.ctimeMs &&
    a.ino === b.ino &&
    a.sha256 === b.sha256
  );
}

function concat<T extends Float32Array | Float64Array | Int32Array>(parts: T[], make: (len: number) => T): T {
  if (parts.length === 1) return parts[0];
  const out = make(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p as never, at);
    at += p.length;
  }
  return out;
}

/** One row of a source, forwarded: what explain needs of its test row. */
export interface SourceRow extends Omit<ForwardRow, 'table'> {
  table: SourceInfo;
  /** The row's file (an image, or a shard) and its row in a shard. */
  file: string;
  fileRow: number | null;
  notes: string[];
  preprocess: PreprocessSummary | null;
}

/** Reads row k of a non-table source and runs it (an unlabelled row is explained for its predicted class). */
export async function forwardSourceRow(
  engine: Engine,
  path: string,
  k: number,
  table: SourceOptions,
  request: ImageRequest,
  run: RunOpts = {},
): Promise<SourceRow> {
  // Unless the options say otherwise, only a label column the user named explicitly must exist in the test data.
  const opts: SourceOptions = {
    ...engine.tableOptions({ ...table, requireLabel: table.requireLabel ?? table.labelColumn !== undefined }),
    imageColumn: request.imageColumn ?? table.imageColumn,
  };
  let kind = await sourceKind(path, opts);
  let plan: ColumnPlan | null = null;
  let cf: ColumnFile | null = null;
  const outOfRange = (rows: number) =>
    new InfluenceError('ROW_OUT_OF_RANGE', `row ${k} does not exist: ${path} has ${rows} rows (0-based)`, {
      file: path,
    });
  try {
    if (kind === 'columns') {
      cf = await openColumns(columnFiles(path)[0]);
      plan = await planColumns(cf, opts);
      if (plan.mode === 'manifest') kind = 'manifest';
    }
    const F = engine.info.F;
    let features: Float32Array | Float64Array =
      engine.info.inputType === 'float64' ? new Float64Array(F) : new Float32Array(F);
    let label = -1;
    let labelled = false;
    let line = 0;
    let file: string;
    let fileRow: number | null = null;
    let notes: string[] = [];
    let preprocess: PreprocessSummary | null = null;
    let info: SourceInfo;
    if (kind === 'columns' && plan && plan.mode !== 'manifest') {
      // Find the shard and row.
      const shards = columnFiles(path);
      let at = 0;
      let found: { shard: string; row: number } | null = null;
      for (const shard of shards) {
        const c = shard === shards[0] ? cf! : await openColumns(shard);
        try {
          const rows = c.rows ?? (await countRows(c));
          if (k < at + rows) {
            found = { shard, row: k - at };
            const cols = plan.mode === 'numbers' ? plan.columns : [plan.column];
            const ask = plan.label ? [plan.label, ...cols] : cols;
            const [row] = await c.rowsAt(ask, found.row, found.row + 1);
            const classes = opts.classes ?? (plan.label ? (c.hf?.classNames[plan.label] ?? null) : null);
            if (plan.label) {
              label = new LabelMap(shard, plan.label, classes, opts.numClasses).id(row[0], found.row);
              labelled = true;
            }
            const off = plan.label ? 1 : 0;
            if (plan.mode === 'numbers') {
              if (plan.featureCount !== F)
                engine.checkWidth({
                  path,
                  format: 'parquet',
                  columns: c.columns.map((x) => x.name),
                  labelColumn: opts.labelColumn ?? 'label',
                  hasLabel: !!plan.label,
                  featureNames: plan.columns,
                  featureCount: plan.featureCount,
                  size: 0,
                  mtimeMs: 0,
                  ctimeMs: 0,
                  ino: 0,
                });
              numbersOfRow(plan, row, off, features, 0, shard, found.row);
            } else {
              const { pipeline, notes: n } = modelPipeline(engine, request.preprocess);
              notes = n;
              preprocess = summarize(pipeline, plan.hf);
              const v = row[off] as Uint8Array | { bytes?: Uint8Array | null } | null;
              const bytes = v instanceof Uint8Array ? v : (v?.bytes ?? null);
              if (!bytes)
                throw new InfluenceError('IMAGE_CORRUPT', `row ${found.row}: the image column holds no image bytes`, {
                  file: shard,
                });
              for await (const ch of imagePool().load(
                [{ path: `${shard} row ${found.row}`, bytes, hf: plan.hf }],
                pipeline,
                { signal: run.signal },
              ))
                features = ch.features;
            }
            break;
          }
          at += rows;
        } finally {
          if (c !== cf) await c.close();
        }
      }
      if (!found) throw outOfRange(at);
      file = resolve(found.shard);
      fileRow = found.row;
      info = {
        path,
        format: /\.(parquet|pq)$/i.test(found.shard) ? 'parquet' : 'arrow',
        columns: cf!.columns.map((x) => x.name),
        labelColumn: opts.labelColumn ?? 'label',
        hasLabel: labelled,
        featureNames: plan.mode === 'numbers' ? plan.columns : [],
        featureCount: F,
        size: 0,
        mtimeMs: 0,
        ctimeMs: 0,
        ino: 0,
      };
    } else {
      const listing = await listImages(path, kind as ImageListing['kind'], opts);
      if (k >= listing.n) throw outOfRange(listing.n);
      const { pipeline, notes: n } = modelPipeline(engine, request.preprocess);
      preprocess = summarize(pipeline, false);
      file = listing.files[listing.file[k]];
      line = listing.lines[k];
      const task: ImageTask = { path: file, ...(listing.manifest ? { place: { file: listing.manifest, line } } : {}) };
      let facts: ImageFacts | null = null;
      for await (const ch of imagePool().load([task], pipeline, { signal: run.signal })) {
        features = ch.features;
        facts = ch.facts[0];
      }
      notes = [...n, ...conversionNotes([facts?.kind ?? null], pipeline, path)];
      labelled = listing.labelled;
      label = listing.labels[k];
      info = sourceInfo(path, formatOf(kind, path), listing.columns, listing.labelColumn, labelled, F, {
        rows: listing.n,
        sha256: '',
        size: 0,
        mtimeMs: 0,
        ctimeMs: 0,
        ino: 0,
      });
    }
    const one = Int32Array.of(labelled ? label : 0);
    const out = await engine.runBatch(features, one, 1);
    if (!out.z.every(Number.isFinite))
      throw new InfluenceError('MODEL_NOT_FINITE', `the model produced a non-finite logit for row ${k}`, { file });
    if (!labelled) {
      one[0] = engine.task.prediction(out.z).predicted;
      lossAndSignal(engine.task, out.z, one, 1, out.loss, out.g);
    }
    return {
      table: info,
      line,
      label: one[0],
      labelled,
      features,
      h: out.h,
      z: out.z,
      loss: out.loss[0],
      g: out.g,
      file,
      fileRow,
      notes,
      preprocess,
    };
  } finally {
    await cf?.close();
  }
}

async function countRows(c: ColumnFile): Promise<number> {
  let n = 0;
  for await (const rows of c.batches([c.columns[0].name])) n += rows.length;
  return n;
}

/**
 * The column names of a data source, for the label column picker: a text table's or manifest's
 * header, the first Parquet/Arrow file's columns; none for images (their labels are folders).
 */
export async function sourceColumns(path: string): Promise<string[]> {
  const kind = await sourceKind(path);
  if (kind === 'table' || kind === 'manifest') return readHeader(path);
  if (kind !== 'columns') return [];
  const cf = await openColumns(columnFiles(path)[0]);
  try {
    return cf.columns.map((c) => c.name);
  } finally {
    await cf.close();
  }
}

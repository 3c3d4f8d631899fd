/**
 * Forward rows of the Parquet and Arrow sources (one file or a folder of shards) through the cache,
 * shard by shard: a shard whose stamp is unchanged since the cached run keeps its rows; the others
 * are read again, numeric columns or an encoded image column (decoded in images/pool.ts). Also a
 * shard's rows as features (the deep path reads them too), its row count, and a source's column
 * names for the label column picker.
 */
import { resolve } from 'node:path';
import { InfluenceError, throwIfAborted } from '../errors';
import { hashFile } from '../cache/keys';
import { openColumns, type ColumnFile } from '../data/columnar';
import type { ImageFacts, ImageTask } from '../data/images/load';
import { imagePool } from '../data/images/pool';
import type { Pipeline } from '../data/images/preprocess';
import { LabelMap } from '../data/columnLabels';
import type { RowLocator, StampSha } from '../data/locator';
import {
  columnFiles,
  numbersOfRow,
  planColumns,
  sourceKind,
  type ColumnPlan,
  type SourceOptions,
} from '../data/source';
import { readHeader } from '../data/table';
import type { Engine } from '../model/engine';
import { lossAndSignal } from '../task/loss';
import {
  formatOf,
  modelPipeline,
  NO_STAMP,
  sameStamp,
  sourceInfo,
  sourceKey,
  statOrNull,
  summarize,
  summaryOf,
  unchanged,
  type ImageRequest,
  type RunOpts,
  type SourceRows,
} from './shared';

/** Rows of one columnar file as features and labels, chunk by chunk (images decoded in the pool). */
export async function* readShard(
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

export async function readColumnRows(
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
  const columns = info0.columns.map((c) => c.name);
  const featureNames = plan.mode === 'numbers' ? plan.columns : [];
  engine.checkWidth(
    sourceInfo(path, 'parquet', columns, opts.labelColumn ?? 'label', plan.label !== null, F, NO_STAMP, featureNames),
  );
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
  const info = sourceInfo(
    path,
    formatOf('columns', shards[0]),
    columns,
    opts.labelColumn ?? 'label',
    plan.label !== null,
    F,
    summary,
    featureNames,
  );
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

export async function countRows(c: ColumnFile): Promise<number> {
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

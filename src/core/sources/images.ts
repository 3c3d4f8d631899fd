/**
 * Forward rows of the image sources (an image folder, one image, a manifest) through the cache,
 * image by image: an image whose stamp is unchanged since the cached run keeps its rows; the others
 * are decoded in parallel (images/pool.ts), in bounded chunks, and run through the model in batches.
 */
import { InfluenceError, throwIfAborted } from '../errors';
import type { ImageFacts, ImageTask } from '../data/images/load';
import { imagePool } from '../data/images/pool';
import type { RowLocator, StampSha } from '../data/locator';
import { listImages, type ImageListing, type SourceOptions } from '../data/source';
import type { Engine } from '../model/engine';
import { lossAndSignal } from '../task/loss';
import {
  conversionNotes,
  formatOf,
  modelPipeline,
  sameStamp,
  sourceInfo,
  sourceKey,
  summarize,
  summaryOf,
  unchanged,
  type ImageRequest,
  type RunOpts,
  type SourceRows,
} from './shared';

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

export async function readImageRows(
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

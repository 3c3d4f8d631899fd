/**
 * Beyond the head: a non-table source's features in row order, in chunks, with no cache and no model
 * run. The deep pass runs its own graph on them, over the rows that index.ts's readSourceRows gave.
 */
import { InfluenceError } from '../errors';
import { openColumns } from '../data/columnar';
import type { ImageTask } from '../data/images/load';
import { imagePool } from '../data/images/pool';
import type { Pipeline } from '../data/images/preprocess';
import { columnFiles, listImages, planColumns, type SourceOptions } from '../data/source';
import type { Engine } from '../model/engine';
import { readShard } from './columns';
import { modelPipeline, sourceOf, type ImageRequest, type RunOpts } from './shared';

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

/**
 * One row of a non-table source, read and run alone: explain's test row (a row of a Parquet/Arrow
 * shard, an image, a manifest's row), with no cache, since one row is cheap to read.
 */
import { resolve } from 'node:path';
import { InfluenceError } from '../errors';
import { openColumns, type ColumnFile } from '../data/columnar';
import type { ImageFacts, ImageTask } from '../data/images/load';
import { imagePool } from '../data/images/pool';
import { LabelMap } from '../data/columnLabels';
import {
  columnFiles,
  listImages,
  numbersOfRow,
  planColumns,
  sourceKind,
  type ColumnPlan,
  type ImageListing,
  type SourceInfo,
  type SourceOptions,
} from '../data/source';
import type { Engine, ForwardRow } from '../model/engine';
import { lossAndSignal } from '../task/loss';
import { countRows } from './columns';
import {
  conversionNotes,
  formatOf,
  modelPipeline,
  NO_STAMP,
  sourceInfo,
  summarize,
  type ImageRequest,
  type PreprocessSummary,
  type RunOpts,
} from './shared';

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
      info = sourceInfo(
        path,
        formatOf('columns', found.shard),
        cf!.columns.map((x) => x.name),
        opts.labelColumn ?? 'label',
        labelled,
        F,
        NO_STAMP,
        plan.mode === 'numbers' ? plan.columns : [],
      );
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
      info = sourceInfo(path, formatOf(kind, path), listing.columns, listing.labelColumn, labelled, F, NO_STAMP);
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

/** Reads a whole data file with the engine's TableReader (tests only): every batch, concatenated. */
import {
  TableReader,
  type Batch,
  type TableInfo,
  type TableOptions,
  type TableSummary,
} from '../../src/core/data/table';

export async function readAll(
  path: string,
  opts?: TableOptions,
): Promise<{
  info: TableInfo;
  features: Float32Array;
  labels: Int32Array;
  lines: Int32Array;
  offsets: Float64Array;
  summary: TableSummary;
}> {
  const reader = await TableReader.open(path, opts);
  const parts: Batch[] = [];
  let rows = 0;
  for await (const b of reader.batches()) {
    parts.push(b);
    rows += b.count;
  }
  const F = reader.info.featureCount;
  const features = new Float32Array(rows * F);
  const labels = new Int32Array(rows);
  const lines = new Int32Array(rows);
  const offsets = new Float64Array(rows + 1);
  const summary = reader.summary();
  if (parts.length === 0) offsets[0] = summary.size;
  for (const b of parts) {
    features.set(b.features, b.start * F);
    labels.set(b.labels, b.start);
    lines.set(b.lines, b.start);
    offsets.set(b.offsets, b.start);
  }
  return { info: reader.info, features, labels, lines, offsets, summary };
}

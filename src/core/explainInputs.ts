/**
 * What explain reads first, over the head or deeper layers alike: how to read the files, and the
 * test row; and the parts of its result that both fill alike from them.
 */
import type { ExplainRequest, ExplainResult } from './explainShapes';
import type { ExplainScores } from './scores/explain';
import type { Engine } from './model/engine';
import { forwardSourceRow } from './sources';

/**
 * A stage timer: `lap(name)` records in `seconds` the time since the previous lap (or `t0`);
 * `restart()` starts the next lap now, after stages that timed themselves.
 */
export function stageTimer(t0: number): {
  seconds: Record<string, number>;
  lap: (name: string) => void;
  restart: () => void;
} {
  const seconds: Record<string, number> = {};
  let t = t0;
  return {
    seconds,
    lap: (name) => {
      const now = performance.now();
      seconds[name] = (now - t) / 1000;
      t = now;
    },
    restart: () => {
      t = performance.now();
    },
  };
}

/**
 * How to read the files (tables, manifests, Parquet/Arrow, image folders: the training data decide,
 * and the test data follow them), laps 'chooseTables', then the test row: a bad test file fails
 * fast, before the long pass over the training data.
 */
export async function readExplainInputs(req: ExplainRequest, eng: Engine, lap: (name: string) => void) {
  const images = req.images ?? {};
  const run = { signal: req.signal, onProgress: req.onProgress, batchSize: req.batchSize, cache: req.cache, images };
  const table = { ...req.table, ...(images.imageColumn !== undefined ? { imageColumn: images.imageColumn } : {}) };
  const trainTable = await eng.chooseSource(req.train, table, { signal: req.signal });
  const testTable = await eng.chooseSource(req.test, table, {
    like: trainTable,
    requireLabel: table.labelColumn !== undefined,
    signal: req.signal,
  });
  lap('chooseTables');
  const test =
    testTable.kind === 'table'
      ? await eng.forwardRow(req.test, req.testRow, testTable.options, run)
      : await forwardSourceRow(eng, req.test, req.testRow, testTable.options, images, run);
  return { images, run, trainTable, testTable, test };
}

/** The result's `test`: the row explained for `label`, with the model's probabilities and loss there. */
export function testResult(
  req: ExplainRequest,
  test: Awaited<ReturnType<typeof readExplainInputs>>['test'],
  label: number,
  scores: ExplainScores,
  probabilities: number[],
  loss: number,
): ExplainResult['test'] {
  return {
    path: req.test,
    row: req.testRow,
    line: test.line,
    label,
    labelled: test.labelled,
    predicted: scores.predicted,
    probabilities,
    loss,
    margin: scores.margin,
    runnerUp: scores.runnerUp,
    features: Array.from(test.features),
    featureNames: test.table.featureNames,
    ...('file' in test ? { file: test.file, ...(test.fileRow !== null ? { fileRow: test.fileRow } : {}) } : {}),
  };
}

/** The result's `rows`: each training row's place, label, predicted class and loss. */
export function rowsResult(
  rows: { lines: Int32Array; labels: Int32Array; offsets: Float64Array; locator?: ExplainResult['rows']['locator'] },
  predicted: Int32Array,
  loss: Float64Array,
): ExplainResult['rows'] {
  return {
    line: rows.lines,
    label: rows.labels,
    predicted,
    loss,
    offsets: rows.offsets,
    ...(rows.locator ? { locator: rows.locator } : {}),
  };
}

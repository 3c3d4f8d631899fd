/**
 * The data rules (data/choose.ts) on the sources that are not text tables (data/chooseSource.ts):
 * a manifest's and a Parquet/Arrow file's label column is guessed as a table's, names as labels
 * map in sorted order, Parquet columns can be ignored (and a pandas index is skipped), an image
 * folder's classes are its folders; the test and held-out data follow the training data's choice.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parquetWriteFile } from 'hyparquet-writer';
import { audit, type AuditResult } from '../../src/core/audit';
import { InfluenceError } from '../../src/core/errors';
import { explain } from '../../src/core/explain';
import { Engine } from '../../src/core/model/engine';
import { sourceColumns } from '../../src/core/sources';
import { relErr } from '../helpers/stats';

const root = resolve(__dirname, '../..');
const at = (p: string) => resolve(root, p);
const tmp = mkdtempSync(join(tmpdir(), 'il-rules-'));
const DIGITS = at('samples/digits/model.onnx');
/** The same kind of model without class names in its metadata: names as labels take the sorted order. */
const NOMETA = at('test/fixtures/digits/logits_nometa.onnx');
const images = { preprocess: { std: [15 / 255] } };

/** The sample's image manifest rewritten: absolute paths, and the label column and its values changed. */
function manifest(
  name: string,
  split: 'train' | 'test',
  labelColumn: string | null,
  value: (y: string) => string = (y) => y,
): string {
  const base = at('samples/digits/images');
  const [, ...lines] = readFileSync(join(base, `${split}.csv`), 'utf8')
    .trim()
    .split('\n');
  const rows = lines.map((l) => {
    const [p, y] = l.split(',');
    return labelColumn === null ? join(base, p) : `${join(base, p)},${value(y)}`;
  });
  const file = join(tmp, name);
  writeFileSync(file, [labelColumn === null ? 'path' : `path,${labelColumn}`, ...rows].join('\n') + '\n');
  return file;
}

function rejects(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  return assert.rejects(p, (e: unknown) => e instanceof InfluenceError && e.code === code && message.test(e.message));
}

describe('manifests follow the label column rules', () => {
  let eng: Engine;
  before(async () => void (eng = await Engine.open(DIGITS)));
  after(async () => eng.release());

  it('a "target" column is the label (a note says so); the test manifest follows; the scores are the "label" manifest\'s', async () => {
    const ref = await explain(
      {
        model: DIGITS,
        train: at('samples/digits/images/train.csv'),
        test: at('samples/digits/images/test.csv'),
        testRow: 5,
        images,
        stability: false,
      },
      eng,
    );
    const r = await explain(
      {
        model: DIGITS,
        train: manifest('t_train.csv', 'train', 'target'),
        test: manifest('t_test.csv', 'test', 'target'),
        testRow: 5,
        images,
        stability: false,
      },
      eng,
    );
    assert.equal(r.labelColumn, 'target');
    assert.equal(r.tables.train.labelColumn, 'target');
    assert.equal(r.tables.test.labelColumn, 'target');
    assert.ok(
      r.notes.some((n) => /t_train\.csv: the label column is "target"/.test(n)),
      r.notes.join('\n'),
    );
    assert.equal(r.test.labelled, true);
    assert.equal(r.test.label, ref.test.label);
    assert.deepEqual(Array.from(r.rows.label), Array.from(ref.rows.label));
    assert.ok(relErr(r.scores.influence, ref.scores.influence) < 1e-12);
    assert.equal(r.rows.line[0], 2, "a manifest's rows keep their lines");
  });

  it('class names as labels map to ids in sorted order, with a note; the test manifest takes the same names', async () => {
    const nometa = await Engine.open(NOMETA);
    try {
      const ref = await explain(
        {
          model: NOMETA,
          train: at('samples/digits/images/train.csv'),
          test: at('samples/digits/images/test.csv'),
          testRow: 2,
          images,
          stability: false,
        },
        nometa,
      );
      const name = (y: string) => `digit-${y}`;
      const r = await explain(
        {
          model: NOMETA,
          train: manifest('n_train.csv', 'train', 'label', name),
          test: manifest('n_test.csv', 'test', 'label', name),
          testRow: 2,
          images,
          stability: false,
        },
        nometa,
      );
      assert.deepEqual(r.classes, [...'0123456789'].map(name));
      assert.ok(
        r.notes.some((n) => /n_train\.csv: the labels are class names: mapped to class ids in sorted order/.test(n)),
        r.notes.join('\n'),
      );
      assert.deepEqual(Array.from(r.rows.label), Array.from(ref.rows.label));
      assert.equal(r.test.label, ref.test.label);
      assert.ok(relErr(r.scores.influence, ref.scores.influence) < 1e-12);
    } finally {
      await nometa.release();
    }
  });

  it('a test manifest without the label column is unlabelled: the predicted class is explained', async () => {
    const r = await explain(
      {
        model: DIGITS,
        train: manifest('u_train.csv', 'train', 'target'),
        test: manifest('u_test.csv', 'test', null),
        testRow: 0,
        images,
        stability: false,
      },
      eng,
    );
    assert.equal(r.test.labelled, false);
    assert.equal(r.tables.test.labelColumn, 'target');
  });

  it('a training manifest with no label column: LABEL_COLUMN_MISSING that names --label-column', async () => {
    await rejects(
      audit(
        {
          model: DIGITS,
          train: manifest('none.csv', 'train', null),
          heldOut: null,
          damping: 'auto',
          tau: 0,
          images,
          stability: false,
        },
        eng,
      ),
      'LABEL_COLUMN_MISSING',
      /--label-column/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Parquet written here from the noisy fixture's CSVs: the same rows under other column rules.

const NOISY = at('test/fixtures/noisy/model.onnx');

function readCsv(path: string): { names: string[]; rows: number[][] } {
  const [head, ...lines] = readFileSync(path, 'utf8').trim().split('\n');
  return { names: head.split(','), rows: lines.map((l) => l.split(',').map(Number)) };
}

interface Shape {
  /** The label column's name, and its values as text (class names) rather than integers. */
  label?: string;
  names?: (y: number) => string;
  /** Extra columns: before the pixels (an index) or after them. */
  first?: { name: string; value: (i: number) => number };
  last?: { name: string; value: (i: number) => number };
}

function noisyParquet(split: 'train' | 'validation', name: string, shape: Shape): string {
  const { names, rows } = readCsv(at(`test/fixtures/noisy/${split}.csv`));
  const li = names.indexOf('label');
  const columnData: { name: string; data: unknown; type: string }[] = [];
  if (shape.first)
    columnData.push({ name: shape.first.name, data: rows.map((_, i) => BigInt(shape.first!.value(i))), type: 'INT64' });
  names.forEach((n, j) => {
    if (j !== li) columnData.push({ name: n, data: Float64Array.from(rows, (r) => r[j]), type: 'DOUBLE' });
  });
  if (shape.last)
    columnData.push({
      name: shape.last.name,
      data: Float64Array.from(rows, (_, i) => shape.last!.value(i)),
      type: 'DOUBLE',
    });
  const label = shape.label ?? 'label';
  columnData.push(
    shape.names
      ? { name: label, data: rows.map((r) => shape.names!(r[li])), type: 'STRING' }
      : { name: label, data: rows.map((r) => BigInt(r[li])), type: 'INT64' },
  );
  const file = join(tmp, name);
  parquetWriteFile({ filename: file, columnData, rowGroupSize: 256 } as Parameters<typeof parquetWriteFile>[0]);
  return file;
}

describe('Parquet files follow the data rules', () => {
  let eng: Engine;
  let csv: AuditResult;
  before(async () => {
    eng = await Engine.open(NOISY);
    csv = await audit(
      {
        model: NOISY,
        train: at('test/fixtures/noisy/train.csv'),
        heldOut: { path: at('test/fixtures/noisy/validation.csv'), source: 'validation' },
        damping: 'auto',
        tau: 0,
        stability: false,
      },
      eng,
    );
  });
  after(async () => eng.release());

  const run = (train: string, validation: string, table = {}) =>
    audit(
      {
        model: NOISY,
        train,
        heldOut: { path: validation, source: 'validation' },
        table,
        damping: 'auto',
        tau: 0,
        stability: false,
      },
      eng,
    );
  const same = (a: AuditResult) => {
    assert.deepEqual(Array.from(a.rows.labels), Array.from(csv.rows.labels));
    assert.deepEqual(Array.from(a.scores.memorized!), Array.from(csv.scores.memorized!));
    assert.ok(relErr(a.scores.suspicion, csv.scores.suspicion) < 1e-9);
    assert.equal(a.heldOutAccuracy, csv.heldOutAccuracy);
  };

  it('a "y" label column is guessed, in the training and the held-out file', async () => {
    const a = await run(
      noisyParquet('train', 'y_train.parquet', { label: 'y' }),
      noisyParquet('validation', 'y_val.parquet', { label: 'y' }),
    );
    same(a);
    assert.equal(a.labelColumn, 'y');
    assert.equal(a.tables.heldOut!.labelColumn, 'y');
    assert.ok(
      a.notes.some((n) => /y_train\.parquet: the label column is "y"/.test(n)),
      a.notes.join('\n'),
    );
  });

  it('text labels map in sorted order (a note), and the held-out file takes the same names', async () => {
    // A model without class names in its metadata (the noisy model names its classes 0-9).
    const nometa = await Engine.open(NOMETA);
    try {
      const names = (y: number) => `class ${String.fromCharCode(97 + y)}`;
      const heldOut = (path: string) => ({ path, source: 'validation' as const });
      const ref = await audit(
        {
          model: NOMETA,
          train: at('test/fixtures/noisy/train.csv'),
          heldOut: heldOut(at('test/fixtures/noisy/validation.csv')),
          damping: 'auto',
          tau: 0,
          stability: false,
        },
        nometa,
      );
      const a = await audit(
        {
          model: NOMETA,
          train: noisyParquet('train', 's_train.parquet', { names }),
          heldOut: heldOut(noisyParquet('validation', 's_val.parquet', { names })),
          damping: 'auto',
          tau: 0,
          stability: false,
        },
        nometa,
      );
      assert.deepEqual(Array.from(a.rows.labels), Array.from(ref.rows.labels));
      assert.ok(relErr(a.scores.suspicion, ref.scores.suspicion) < 1e-9);
      assert.deepEqual(
        a.classes,
        Array.from({ length: 10 }, (_, y) => names(y)),
      );
      assert.deepEqual(a.tables.heldOut!.classes, a.classes);
      assert.ok(
        a.notes.some((n) =>
          /s_train\.parquet: the labels are class names: mapped to class ids in sorted order/.test(n),
        ),
        a.notes.join('\n'),
      );
      // With the names in another order, the class-order check names the sorted one.
      const shuffled = [...a.classes!].reverse();
      const w = await audit(
        {
          model: NOMETA,
          train: noisyParquet('train', 's_train.parquet', { names }),
          heldOut: null,
          table: { classes: shuffled },
          damping: 'auto',
          tau: 0,
          stability: false,
        },
        nometa,
      );
      assert.equal(w.warnings[0]?.code, 'CLASS_ORDER');
    } finally {
      await nometa.release();
    }
  });

  it('--ignore-columns drops a column (and the held-out file skips it too); without it the count does not match', async () => {
    const last = { name: 'weight', value: (i: number) => i % 7 };
    const train = noisyParquet('train', 'w_train.parquet', { last });
    const validation = noisyParquet('validation', 'w_val.parquet', { last });
    await rejects(run(train, validation), 'FEATURE_COUNT_MISMATCH', /takes 64 features/);
    const a = await run(train, validation, { ignoreColumns: ['weight'] });
    same(a);
    assert.deepEqual(a.tables.heldOut!.ignoreColumns, ['weight']);
    await rejects(run(train, validation, { ignoreColumns: ['nope'] }), 'FEATURE_COLUMN_MISSING', /"nope" not found/);
  });

  it('a pandas index column ("Unnamed: 0") is skipped, with a note', async () => {
    const first = { name: 'Unnamed: 0', value: (i: number) => i };
    const a = await run(
      noisyParquet('train', 'i_train.parquet', { first }),
      noisyParquet('validation', 'i_val.parquet', { first }),
    );
    same(a);
    assert.ok(
      a.notes.some((n) => /i_train\.parquet: the first column "Unnamed: 0" \(a pandas index\) is skipped/.test(n)),
      a.notes.join('\n'),
    );
  });
});

describe("an image folder's classes are its folders", () => {
  it('classes, no label column, and a CSV test file reads like it', async () => {
    const eng = await Engine.open(DIGITS);
    try {
      const r = await explain(
        {
          model: DIGITS,
          train: at('samples/digits/images/train'),
          test: at('samples/digits/test.csv'),
          testRow: 1,
          images,
          stability: false,
        },
        eng,
      );
      assert.deepEqual(r.classes, [...'0123456789']);
      assert.equal(r.labelColumn, null);
      assert.deepEqual(r.tables.train.classes, [...'0123456789']);
      assert.equal(r.tables.test.labelColumn, 'label');
      assert.equal(r.test.labelled, true);
    } finally {
      await eng.release();
    }
    // Without class names in the model, the folders name the classes (sorted, as torchvision).
    const nometa = await Engine.open(NOMETA);
    try {
      const a = await audit(
        {
          model: NOMETA,
          train: at('samples/digits/images/train'),
          heldOut: null,
          images,
          damping: 'auto',
          tau: 0,
          stability: false,
        },
        nometa,
      );
      assert.deepEqual(a.classes, [...'0123456789']);
      assert.equal(a.labelColumn, null);
      assert.deepEqual(a.warnings, []);
    } finally {
      await nometa.release();
    }
  });

  it('the command line says where the labels come from, and the JSON has labelColumn null', () => {
    const args = [
      'explain',
      '--model',
      DIGITS,
      '--train',
      at('samples/digits/images/train'),
      '--test',
      at('samples/digits/test.csv'),
      '--test-row',
      '1',
      '--top',
      '2',
      '--no-stability',
      '--no-cache',
    ];
    const text = spawnSync(process.execPath, [at('dist/cli.js'), ...args], { encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /labels from the class folders/);
    const json = spawnSync(process.execPath, [at('dist/cli.js'), ...args, '--json'], { encoding: 'utf8' });
    assert.equal(json.status, 0, json.stderr);
    const j = JSON.parse(json.stdout);
    assert.equal(j.labelColumn, null);
    assert.deepEqual(j.classes, [...'0123456789']);
  });
});

describe('the columns the label column picker offers', () => {
  it("a table's or manifest's header, a Parquet file's columns, none for an image folder", async () => {
    assert.deepEqual(await sourceColumns(at('samples/digits/images/train.csv')), ['path', 'label']);
    assert.deepEqual(await sourceColumns(at('samples/digits/images/train.parquet')), ['image', 'label']);
    assert.deepEqual(await sourceColumns(at('samples/digits/images/train')), []);
    assert.equal((await sourceColumns(at('samples/digits/train.csv'))).length, 65);
  });
});

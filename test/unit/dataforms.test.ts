/**
 * Data files as pandas and sklearn write them (data/choose.ts, data/labels.ts): the label column
 * guessed, index columns skipped, --ignore-columns, class names from the labels, the JSONL key;
 * and the checks after the pass (checks.ts): the class order by an assignment, non-finite scores.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { rowsKey } from '../../src/core/cache/keys';
import { classOrderWarning, nonFiniteWarning } from '../../src/core/checks';
import {
  chooseTable,
  guessLabelColumn,
  indexColumnOf,
  type ModelShape,
  type TableChoice,
} from '../../src/core/data/choose';
import { compareCodePoints, scanLabelNames, sortedClassNames } from '../../src/core/data/labels';
import type { TableOptions } from '../../src/core/data/table';
import { InfluenceError } from '../../src/core/errors';
import { explain } from '../../src/core/explain';
import { maxAssignment } from '../../src/core/linalg';
import { taskFor } from '../../src/core/task/loss';
import { jsonText } from '../../src/cli/json';
import { buildModel, rng } from '../helpers/models';
import { readAll } from '../helpers/table';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-forms-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function write(name: string, content: string | Uint8Array): string {
  const p = path.join(dir, `${fileNo++}-${name}`);
  fs.writeFileSync(p, content);
  return p;
}

const shape = (F: number, classes = 3, classNames: string[] | null = null, inputName = 'input'): ModelShape => ({
  F,
  classes,
  inputName,
  classNames,
});

async function rejects(p: Promise<unknown>, code: string, msg?: RegExp): Promise<InfluenceError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InfluenceError, `expected ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (msg) assert.match(err.message, msg);
  return err;
}

/** Chooses, then reads the whole file with the choice. */
async function readChosen(p: string, user: TableOptions, model: ModelShape, like?: TableChoice) {
  const choice = await chooseTable(p, user, model, like ? { like, requireLabel: false } : {});
  const r = await readAll(p, { ...choice.options, numClasses: model.classes });
  return { choice, ...r };
}

describe('label column', () => {
  test('label wins; else the one column named target, class, y or labels, in any case', async () => {
    assert.deepEqual(guessLabelColumn(['a', 'target', 'label']), {
      name: 'label',
      guessed: false,
      candidates: ['label'],
    });
    for (const name of ['target', 'Target', 'class', 'CLASS', 'y', 'Y', 'labels', 'Label']) {
      assert.deepEqual(guessLabelColumn(['a', name, 'b']), { name, guessed: true, candidates: [name] }, name);
    }
    assert.equal(guessLabelColumn(['a', 'b']).name, null);
    assert.equal(guessLabelColumn(['a', 'target', 'y']).name, null);
    assert.equal(guessLabelColumn(['a', 'target', 'y'], new Set(['y'])).name, 'target');
    // `label` in another case comes before the other names.
    assert.equal(guessLabelColumn(['y', 'Label']).name, 'Label');
    assert.equal(guessLabelColumn(['LABEL', 'Label']).name, null);
  });

  test('a guessed column is read as the label, said in a note', async () => {
    const p = write('t.csv', 'a,b,target\n1,2,0\n3,4,2\n');
    const r = await readChosen(p, {}, shape(2));
    assert.equal(r.choice.labelColumn, 'target');
    assert.equal(r.choice.labelGuessed, true);
    assert.deepEqual([...r.labels], [0, 2]);
    assert.deepEqual(r.info.featureNames, ['a', 'b']);
    assert.equal(r.choice.notes.length, 1);
    assert.match(
      r.choice.notes[0],
      /^[^:]*t\.csv: the label column is "target" \(there is no "label" column\); name another with --label-column$/,
    );
  });

  test('two candidates: LABEL_COLUMN_MISSING naming them and suggesting --label-column (not --features)', async () => {
    const p = write('two.csv', 'a,target,y\n1,0,1\n');
    const e = await rejects(
      chooseTable(p, {}, shape(1)),
      'LABEL_COLUMN_MISSING',
      /2 columns could be it: "target", "y"/,
    );
    assert.match(e.message, /--label-column/);
    assert.doesNotMatch(e.message, /--features/);
    assert.equal(e.place.file, p);
  });

  test('no candidate: LABEL_COLUMN_MISSING naming the columns found', async () => {
    const p = write('none.csv', 'a,b,c\n1,2,0\n');
    const e = await rejects(chooseTable(p, {}, shape(2)), 'LABEL_COLUMN_MISSING', /columns found: "a", "b", "c"/);
    assert.match(e.message, /none named target, class, y, labels/);
    assert.match(e.message, /--label-column/);
    assert.doesNotMatch(e.message, /--features/);
  });

  test('an explicit --label-column always wins', async () => {
    const p = write('explicit.csv', 'a,target,y\n1,0,2\n');
    const r = await readChosen(p, { labelColumn: 'y' }, shape(2));
    assert.equal(r.choice.labelColumn, 'y');
    assert.equal(r.choice.labelGuessed, false);
    assert.deepEqual(r.choice.notes, []);
    assert.deepEqual(r.info.featureNames, ['a', 'target']);
    assert.deepEqual([...r.labels], [2]);
    await rejects(
      chooseTable(p, { labelColumn: 'nope' }, shape(2)).then((c) => readAll(p, c.options)),
      'LABEL_COLUMN_MISSING',
      /"nope".*--label-column/,
    );
  });

  test('an ignored column is not a candidate', async () => {
    const p = write('ign.csv', 'y,a,target\n5,1,0\n');
    const c = await chooseTable(p, { ignoreColumns: ['y'] }, shape(1));
    assert.equal(c.labelColumn, 'target');
  });

  test('a test file follows the training file: its guessed column is the label, and a file without it is unlabelled', async () => {
    const train = await chooseTable(write('tr.csv', 'a,b,target\n1,2,0\n'), {}, shape(2));
    const labelled = await readChosen(write('te.csv', 'a,b,target\n5,6,1\n'), {}, shape(2), train);
    assert.equal(labelled.choice.labelColumn, 'target');
    assert.deepEqual([...labelled.labels], [1]);
    assert.deepEqual(labelled.choice.notes, [], 'decisions taken over from the training file are not repeated');
    const bare = await readChosen(write('te2.csv', 'a,b\n5,6\n'), {}, shape(2), train);
    assert.equal(bare.choice.labelColumn, null);
    assert.deepEqual([...bare.labels], [-1]);
    assert.deepEqual([...bare.features], [5, 6]);
    // A file without the training file's label column finds its own by the same rule, and says so.
    const other = await readChosen(write('te3.csv', 'a,b,label\n5,6,2\n'), {}, shape(2), train);
    assert.equal(other.choice.labelColumn, 'label');
    assert.deepEqual([...other.labels], [2]);
    assert.match(
      other.choice.notes.join('\n'),
      /te3\.csv: the label column is "label" \(there is no "target" column\)/,
    );
    const y = await chooseTable(write('te4.csv', 'a,b,y\n5,6,2\n'), {}, shape(2), { like: train, requireLabel: false });
    assert.equal(y.labelColumn, 'y');
    // But a test file whose columns match the model is unlabelled: its `y` is a feature.
    const xy = await readChosen(write('te6.csv', 'x,y\n5,6\n'), {}, shape(2), train);
    assert.equal(xy.choice.labelColumn, null);
    assert.deepEqual(xy.info.featureNames, ['x', 'y']);
    assert.deepEqual(xy.choice.notes, []);
    // A held-out file must have one: the error names what it found.
    await rejects(
      chooseTable(write('te5.csv', 'a,b\n5,6\n'), {}, shape(2), { like: train, requireLabel: true }),
      'LABEL_COLUMN_MISSING',
      /columns found: "a", "b"/,
    );
  });
});

describe('index columns', () => {
  test('which first columns may be an index', () => {
    assert.deepEqual(indexColumnOf(['', 'a']), { name: '', kind: 'pandas' });
    assert.deepEqual(indexColumnOf(['Unnamed: 0', 'a']), { name: 'Unnamed: 0', kind: 'pandas' });
    assert.deepEqual(indexColumnOf(['id', 'a']), { name: 'id', kind: 'id' });
    assert.deepEqual(indexColumnOf(['Index', 'a']), { name: 'Index', kind: 'id' });
    assert.equal(indexColumnOf(['a', 'id']), null);
    assert.equal(indexColumnOf(['unnamed: 0', 'a']), null);
  });

  test('a pandas index ("" or "Unnamed: 0") is skipped when the other columns then match the model', async () => {
    for (const head of ['', 'Unnamed: 0']) {
      const p = write('pd.csv', `${head},a,b,label\n0,1,2,0\n1,3,4,1\n`);
      const r = await readChosen(p, {}, shape(2));
      assert.deepEqual(r.choice.options.ignoreColumns, [head]);
      assert.deepEqual(r.info.featureNames, ['a', 'b']);
      assert.deepEqual([...r.features], [1, 2, 3, 4]);
      assert.match(
        r.choice.notes.join('\n'),
        new RegExp(`the first column ${JSON.stringify(head)} \\(a pandas index\\) is skipped`),
      );
    }
  });

  test('not skipped when the count already matches, or would not match without it', async () => {
    const p = write('pd3.csv', ',a,b,label\n0,1,2,0\n');
    for (const F of [3, 1]) {
      const r = await readChosen(p, {}, shape(F));
      assert.equal(r.choice.options.ignoreColumns, undefined, `F = ${F}`);
      assert.deepEqual(r.info.featureNames, ['', 'a', 'b']);
      assert.deepEqual(r.choice.notes, []);
    }
  });

  test('an id column of distinct integers is skipped; its values are checked during the pass', async () => {
    const p = write('id.csv', 'id,a,b,label\n238,1,2,0\n81,3,4,1\n1793,5,6,2\n');
    const r = await readChosen(p, {}, shape(2));
    assert.equal(r.choice.options.indexColumn, 'id');
    assert.deepEqual(r.info.featureNames, ['a', 'b']);
    assert.deepEqual([...r.features], [1, 2, 3, 4, 5, 6]);
    assert.match(r.choice.notes.join('\n'), /the first column "id" is taken for row ids and skipped/);
  });

  test('an id column with a repeated integer is NOT skipped: the feature count does not match', async () => {
    const p = write('dup.csv', 'id,a,b,label\n7,1,2,0\n8,3,4,1\n7,5,6,2\n9,7,8,0\n');
    const e = await rejects(
      readChosen(p, {}, shape(2)),
      'FEATURE_COUNT_MISMATCH',
      /the value 7 appears on line 2 and again here/,
    );
    assert.equal(e.place.line, 4);
    assert.match(e.message, /makes 3 columns/);
    assert.match(e.message, /--ignore-columns/);
    const f = await rejects(
      readChosen(write('frac.csv', 'index,a,b,label\n1,1,2,0\n2.5,3,4,1\n'), {}, shape(2)),
      'FEATURE_COUNT_MISMATCH',
      /"2\.5", not an integer/,
    );
    assert.deepEqual([f.place.line, f.place.col], [3, 1]);
    // The same through the engine.
    const model = write(
      'm2.onnx',
      buildModel({ F: 2, D: 3, C: 3, head: 'gemmTransB', trailing: 'none', metadata: { 'influence_lens.l2': '0.01' } })
        .bytes,
    );
    await rejects(
      explain({ model, train: p, test: p, testRow: 0 }),
      'FEATURE_COUNT_MISMATCH',
      /appears on line 2 and again here/,
    );
  });

  test('JSONL: an id key of distinct integers is skipped too', async () => {
    const p = write('id.jsonl', '{"id": 5, "a": 1, "b": 2, "label": 0}\n{"id": 3, "a": 3, "b": 4, "label": 1}\n');
    const r = await readChosen(p, {}, shape(2));
    assert.deepEqual([...r.features], [1, 2, 3, 4]);
    const dup = write('dup.jsonl', '{"id": 5, "a": 1, "b": 2, "label": 0}\n{"id": 5, "a": 3, "b": 4, "label": 1}\n');
    await rejects(readChosen(dup, {}, shape(2)), 'FEATURE_COUNT_MISMATCH', /the value 5 appears on line 1/);
  });

  test('a test file takes over the training file’s index column, and finds its own', async () => {
    const train = await chooseTable(write('tr.csv', ',a,b,label\n0,1,2,0\n'), {}, shape(2));
    const same = await readChosen(write('te.csv', ',a,b,label\n0,5,6,1\n'), {}, shape(2), train);
    assert.deepEqual([...same.features], [5, 6]);
    assert.deepEqual(same.choice.notes, []);
    const without = await readChosen(write('te2.csv', 'a,b\n5,6\n'), {}, shape(2), train);
    assert.deepEqual([...without.features], [5, 6]);
    const plain = await chooseTable(write('tr2.csv', 'a,b,label\n1,2,0\n'), {}, shape(2));
    const own = await readChosen(write('te3.csv', 'Unnamed: 0,a,b\n0,5,6\n'), {}, shape(2), plain);
    assert.deepEqual([...own.features], [5, 6]);
    assert.match(own.choice.notes.join('\n'), /te3\.csv: the first column "Unnamed: 0"/);
  });
});

describe('--ignore-columns', () => {
  test('named columns are not features', async () => {
    const p = write('ig.csv', 'a,note,b,seq,label\n1,9,2,8,0\n');
    const r = await readChosen(p, { ignoreColumns: ['note', 'seq'] }, shape(2));
    assert.deepEqual(r.info.featureNames, ['a', 'b']);
    assert.deepEqual([...r.features], [1, 2]);
    assert.deepEqual(r.choice.notes, []);
  });

  test('a name that is not a column, the label column, or a listed feature is an error', async () => {
    const p = write('ig2.csv', 'a,b,label\n1,2,0\n');
    await rejects(
      readChosen(p, { ignoreColumns: ['zzz'] }, shape(2)),
      'FEATURE_COLUMN_MISSING',
      /to ignore "zzz" not found; available columns: "a", "b", "label"/,
    );
    await rejects(
      readChosen(p, { ignoreColumns: ['label'], labelColumn: 'label' }, shape(1)),
      'BAD_OPTION',
      /cannot also be ignored/,
    );
    await rejects(
      readChosen(p, { ignoreColumns: ['a'], features: ['a', 'b'] }, shape(2)),
      'BAD_OPTION',
      /both a feature and ignored/,
    );
  });

  test('a test file without an ignored column is read all the same', async () => {
    const train = await chooseTable(
      write('tr.csv', 'a,note,b,label\n1,9,2,0\n'),
      { ignoreColumns: ['note'] },
      shape(2),
    );
    const t = await readChosen(write('te.csv', 'a,b,label\n3,4,1\n'), { ignoreColumns: ['note'] }, shape(2), train);
    assert.deepEqual([...t.features], [3, 4]);
  });

  test('the rows cache key changes with every option that changes the rows', () => {
    const base: TableOptions = { labelColumn: 'label', numClasses: 3 };
    const keys = [
      base,
      { ...base, ignoreColumns: ['id'] },
      { ...base, indexColumn: 'id' },
      { ...base, ignoreColumns: ['x'] },
      { ...base, classes: ['a', 'b', 'c'] },
      { ...base, features: ['a'] },
      { ...base, labelColumn: 'target' },
      { ...base, requireLabel: false },
    ].map((t) => JSON.stringify(rowsKey('m', '/d.csv', t).options));
    assert.equal(new Set(keys).size, keys.length);
    // Options that do not change the rows leave the key alone.
    assert.equal(
      JSON.stringify(rowsKey('m', '/d.csv', { ...base, batchSize: 7, ignoreColumns: undefined }).options),
      keys[0],
    );
  });
});

describe('class names from the labels', () => {
  test('sorted in code-point order, as numpy sorts strings', () => {
    assert.deepEqual(sortedClassNames(['b', 'a', 'C', 'b', 'é', '\u{1F600}', '\uFF5E', 'aa']), [
      'C',
      'a',
      'aa',
      'b',
      'é',
      '\uFF5E',
      '\u{1F600}',
    ]);
    assert.ok(
      compareCodePoints('\u{1F600}', '\uFF5E') > 0,
      'an astral character sorts after U+FF5E (UTF-16 order would put it first)',
    );
  });

  test('names whose count equals C map in sorted order, said in a note', async () => {
    const p = write('s.csv', 'a,label\n1,cat\n2,dog\n3,ant\n4,cat\n');
    const r = await readChosen(p, {}, shape(1));
    assert.deepEqual(r.choice.options.classes, ['ant', 'cat', 'dog']);
    assert.equal(r.choice.classesFrom, 'labels');
    assert.deepEqual([...r.labels], [1, 2, 0, 1]);
    assert.match(
      r.choice.notes.join('\n'),
      /the labels are class names: mapped to class ids in sorted order, as sklearn's LabelEncoder does \(0 = "ant", 1 = "cat", 2 = "dog"\); pass --classes/,
    );
  });

  test('a count other than C: CLASS_COUNT_MISMATCH suggesting --classes', async () => {
    const few = write('few.csv', 'a,label\n1,cat\n2,dog\n');
    await rejects(
      chooseTable(few, {}, shape(1)),
      'CLASS_COUNT_MISMATCH',
      /class names, 2 distinct ones \("cat", "dog"\), but the model has 3 classes; pass --classes/,
    );
    const many = write(
      'many.csv',
      'a,label\n' + ['a', 'b', 'c', 'd', 'e'].map((c, i) => `${i},${c}`).join('\n') + '\n',
    );
    await rejects(chooseTable(many, {}, shape(1)), 'CLASS_COUNT_MISMATCH', /more than 3 distinct ones.*pass --classes/);
  });

  test('integer labels, --classes or the model’s names: no scan, nothing mapped', async () => {
    const ints = write('ints.csv', 'a,label\n1,0\n2,cat\n');
    const c = await chooseTable(ints, {}, shape(1));
    assert.equal(c.options.classes, null);
    assert.equal(c.classesFrom, null);
    const names = write('names.csv', 'a,label\n1,dog\n2,cat\n');
    assert.deepEqual((await chooseTable(names, { classes: ['dog', 'cat', 'x'] }, shape(1))).options.classes, [
      'dog',
      'cat',
      'x',
    ]);
    const meta = await chooseTable(names, {}, shape(1, 3, ['dog', 'cat', 'x']));
    assert.deepEqual([meta.options.classes, meta.classesFrom], [['dog', 'cat', 'x'], 'metadata']);
  });

  test('names mixed with integer ids: LABEL_INVALID suggesting --classes', async () => {
    const p = write('mixed.csv', 'a,label\n1,cat\n2,3\n3,dog\n');
    const e = await rejects(
      chooseTable(p, {}, shape(1)),
      'LABEL_INVALID',
      /mix class names \("cat", line 2\) and integer class ids \("3", line 3\).*--classes/,
    );
    assert.equal(e.place.line, 3);
  });

  test('the test file takes the training file’s names; a name it does not know is an error', async () => {
    const train = await chooseTable(write('tr.csv', 'a,label\n1,b\n2,c\n3,a\n'), {}, shape(1));
    const t = await readChosen(write('te.csv', 'a,label\n1,c\n'), {}, shape(1), train);
    assert.deepEqual([...t.labels], [2]);
    await rejects(readChosen(write('te2.csv', 'a,label\n1,z\n'), {}, shape(1), train), 'LABEL_UNKNOWN_CLASS');
  });

  test('the line scan and the exact scanner agree (quotes, CRLF, lone CR, BOM, blank lines, TSV, tiny reads)', async () => {
    const names = ['b', 'a c', 'é', 'd'];
    const cases: [string, string][] = [
      ['plain.csv', 'x,label\n1,b\n2, a c \n\n3,é\n4,d\n5,b\n'],
      ['crlf.csv', '\uFEFFx,label\r\n1,b\r\n2,a c\r\n3,é\r\n4,d\r\n'],
      ['quoted.csv', 'x,label\n"1,5",b\n2,"a c"\n3,é\n4,"d"\n'],
      ['lonecr.csv', 'x,label\r1,b\r2,a c\r3,é\r4,d'],
      ['first.csv', 'label,x,y\nb,1,2\na c,3,4\né,5,6\nd,7,8\n'],
      ['middle.csv', 'x,label,y,z,w\n1,b,2,3,4\n1,a c,2,3,4\n1,é,2,3,4\n1,d,2,3,4\n'],
      ['tabs.tsv', 'x\tlabel\n1\tb\n2\ta c\n3\té\n4\td\n'],
      [
        'keys.jsonl',
        '{"label": "b", "x": [1, 2]}\n{"x": [1, 2], "label": "a c"}\n{"x": {"label": "zz"}, "label": "é"}\n{"x": 1, "label": "d", "y": 2}\n{"x": [1], "label":"b"}\n',
      ],
      [
        'escaped.jsonl',
        '{"x": "\\"label\\": \\"q\\"}", "label": "b"}\n{"label": "a c"}\n{"la\\u0062el": "é"}\n{"label": "d"}\n',
      ],
    ];
    for (const [name, content] of cases) {
      const p = write(name, content);
      const format = name.endsWith('.jsonl') ? 'jsonl' : name.endsWith('.tsv') ? 'tsv' : 'csv';
      for (const chunkSize of [undefined, 1, 2, 3, 7]) {
        const r = await scanLabelNames(p, format, 'label', { count: 4, chunkSize });
        assert.deepEqual(r?.names, names, `${name}, chunk ${chunkSize}`);
        assert.equal(r?.first.line, format === 'jsonl' ? 1 : 2, `${name}: first line`);
      }
    }
  });

  test('a ragged row cannot mislead the line scan into an error that is not there', async () => {
    // The short row gives "2" (an id among names) to the scan from the line's end; the exact
    // scanner skips it, and the pass reports it as CSV_RAGGED_ROW.
    const p = write('ragged.csv', 'x,y,label\n1,0,b\n2\n3,0,a\n4,0,c\n');
    const r = await scanLabelNames(p, 'csv', 'label', { count: 3 });
    assert.deepEqual(r?.names, ['b', 'a', 'c']);
    assert.equal(r?.integer, null);
  });
});

describe('JSONL feature key', () => {
  test('the one key holding an array of F numbers is the features; the others are ignored', async () => {
    const p = write(
      'k.jsonl',
      '{"id": 7, "pixels": [[1, 2], [3, 4]], "note": 5, "label": 1}\n{"id": 8, "pixels": [[5, 6], [7, 8]], "note": 5, "label": 0}\n',
    );
    const r = await readChosen(p, {}, shape(4));
    assert.deepEqual(r.choice.options.features, ['pixels']);
    assert.deepEqual([...r.features], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.match(
      r.choice.notes.join('\n'),
      /the features are the key "pixels" \(the one key holding 4 numbers\); the other keys \("id", "note"\) are ignored; choose others with --features/,
    );
  });

  test('the key named like the model input, when several arrays fit', async () => {
    const p = write('k2.jsonl', '{"pixel_values": [1, 2], "aug": [3, 4], "label": 0}\n');
    const r = await readChosen(p, {}, shape(2, 3, null, 'pixelValues'));
    assert.deepEqual(r.choice.options.features, ['pixel_values']);
    assert.match(r.choice.notes.join('\n'), /named like the model's input 'pixelValues'/);
    // A scalar key named like the input, for a one-feature model.
    const q = write('k3.jsonl', '{"id": 1, "input": 0.5, "label": 0}\n');
    assert.deepEqual((await chooseTable(q, {}, shape(1))).options.features, ['input']);
  });

  test('several arrays of F numbers and none named like the input: a clear error', async () => {
    const p = write('k4.jsonl', '{"a": [1, 2], "b": [3, 4], "label": 0}\n');
    await rejects(
      chooseTable(p, {}, shape(2)),
      'FEATURE_COUNT_MISMATCH',
      /the keys "a", "b" each hold 2 numbers; choose one with --features/,
    );
  });

  test('keys that already match the model are read as they are', async () => {
    const p = write('k5.jsonl', '{"a": [1, 2], "b": 3, "label": 0}\n');
    const c = await chooseTable(p, {}, shape(3));
    assert.equal(c.options.features, undefined);
    assert.deepEqual(c.notes, []);
  });
});

describe('class order', () => {
  function perms(m: number): number[][] {
    if (m === 0) return [[]];
    const out: number[][] = [];
    for (const p of perms(m - 1))
      for (let i = 0; i <= p.length; i++) out.push([...p.slice(0, i), m - 1, ...p.slice(i)]);
    return out;
  }

  test('maxAssignment equals brute force on small random matrices (ties included)', () => {
    const r = rng(11);
    for (let t = 0; t < 600; t++) {
      const m = 1 + (t % 7);
      const levels = t % 3 === 0 ? 3 : 1000;
      const W = Float64Array.from({ length: m * m }, () => Math.floor(((r() + 1) / 2) * levels));
      const a = maxAssignment(W, m);
      assert.equal(new Set(a).size, m, 'a permutation');
      const got = Array.from(a).reduce((s, c, row) => s + W[row * m + c], 0);
      let best = -Infinity;
      for (const p of perms(m))
        best = Math.max(
          best,
          p.reduce((s, c, row) => s + W[row * m + c], 0),
        );
      assert.equal(got, best, `m = ${m}, trial ${t}`);
    }
  });

  test('maxAssignment on a few hundred classes finds a hidden permutation', () => {
    const m = 300;
    const r = rng(5);
    const hidden = Array.from({ length: m }, (_, i) => i).sort(() => r());
    const W = Float64Array.from({ length: m * m }, () => Math.floor(((r() + 1) / 2) * 3));
    for (let i = 0; i < m; i++) W[i * m + hidden[i]] = 100;
    assert.deepEqual(Array.from(maxAssignment(W, m)), hidden);
  });

  /** Rows whose logits predict pred[i] (one-hot logits of size 5). */
  function rowsOf(labels: number[], pred: number[], C: number) {
    const z = new Float64Array(labels.length * C);
    pred.forEach((p, i) => (z[i * C + p] = 5));
    return { n: labels.length, C, z, labels: Int32Array.from(labels) };
  }

  test('permuted integer labels: CLASS_ORDER with the mapping, no class names', () => {
    const C = 4;
    const pred = Array.from({ length: 40 }, (_, i) => i % C);
    const labels = pred.map((p) => (p + 1) % C);
    const w = classOrderWarning(rowsOf(labels, pred, C), taskFor(C), null, null);
    assert.ok(w && w.code === 'CLASS_ORDER');
    assert.equal(w.accuracy, 0);
    assert.equal(w.bestAccuracy, 1);
    assert.deepEqual(w.labelToClass, [3, 0, 1, 2]);
    assert.equal(w.bestClasses, null);
    assert.match(w.message, /label 0 → class 3/);
  });

  test('half the best order: CLASS_ORDER even above 1.5/C', () => {
    const C = 10;
    // 40% right; swapping classes 0 and 1 would give 100%.
    const pred: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 100; i++) {
      const c = i % C;
      pred.push(c);
      labels.push(c === 0 ? 1 : c === 1 ? 0 : c);
    }
    for (let i = 0; i < 100; i++)
      if (labels[i] >= 6) labels[i] = labels[i] === 6 ? 7 : labels[i] === 7 ? 6 : labels[i] === 8 ? 9 : 8;
    const names = Array.from({ length: C }, (_, i) => `c${i}`);
    const w = classOrderWarning(rowsOf(labels, pred, C), taskFor(C), names, 'option');
    assert.ok(w && w.code === 'CLASS_ORDER');
    assert.equal(w.accuracy, 0.4);
    assert.equal(w.bestAccuracy, 1);
    assert.deepEqual(w.bestClasses, ['c1', 'c0', 'c2', 'c3', 'c4', 'c5', 'c7', 'c6', 'c9', 'c8']);
    assert.match(w.message, /--classes c1,c0,c2,c3,c4,c5,c7,c6,c9,c8$/);
  });

  test('a right order gives no warning; a poor model in the right order gives LOW_ACCURACY', () => {
    const C = 5;
    const pred = Array.from({ length: 50 }, (_, i) => i % C);
    assert.equal(classOrderWarning(rowsOf(pred, pred, C), taskFor(C), null, null), null);
    // A model that predicts class 0 for every row: 20% right, and no permutation does better.
    const w = classOrderWarning(
      rowsOf(
        pred,
        pred.map(() => 0),
        C,
      ),
      taskFor(C),
      null,
      null,
    );
    if (w && w.code === 'CLASS_ORDER') assert.fail(`unexpected ${w.message}`);
    assert.equal(w?.code, 'LOW_ACCURACY');
  });

  test('a binary head with its two classes swapped', () => {
    const labels = Array.from({ length: 20 }, (_, i) => i % 2);
    const z = Float64Array.from(labels, (y) => (y ? -3 : 3));
    const w = classOrderWarning(
      { n: 20, C: 1, z, labels: Int32Array.from(labels) },
      taskFor(1),
      ['no', 'yes'],
      'labels',
    );
    assert.ok(w && w.code === 'CLASS_ORDER');
    assert.deepEqual(w.bestClasses, ['yes', 'no']);
  });
});

describe('non-finite numbers are never printed', () => {
  test('the leave-one-out loss shift does not overflow', () => {
    const soft = taskFor(3);
    const p = [0.2, 0.3, 0.5];
    assert.ok(Math.abs(soft.lossShift(p, [800, 0, 0], 1) - (800 + Math.log(0.2))) < 1e-9);
    assert.ok(Math.abs(soft.lossShift([0, 0.5, 0.5], [900, 1, 0], 2) - Math.log(0.5 * Math.E + 0.5)) < 1e-12);
    assert.ok(Math.abs(soft.lossShift(p, [1e-9, 0, 0], 0) - (Math.log1p(0.2 * Math.expm1(1e-9)) - 1e-9)) < 1e-24);
    const bin = taskFor(1);
    assert.ok(Math.abs(bin.lossShift([0.25], [1000], 0) - (1000 + Math.log(0.25))) < 1e-9);
    assert.equal(bin.lossShift([0], [1000], 1), -1000);
  });

  test('NON_FINITE names the scores and rows; the JSON has null for them', () => {
    const w = nonFiniteWarning(
      { a: Float64Array.of(1, Infinity, 2, NaN), b: Float64Array.of(1, 2, 3, 4), c: null },
      'because',
    );
    assert.ok(w);
    assert.deepEqual(w.scores, { a: { count: 2, rows: [1, 3] } });
    assert.match(
      w.message,
      /^not finite: a of 2 rows \(1, 3\); because\. They are null in the JSON and n\/a in the table$/,
    );
    assert.equal(nonFiniteWarning({ a: Float64Array.of(1, 2) }, 'x'), null);
    assert.equal(
      jsonText({ a: [1, Infinity, -Infinity, NaN], b: { c: NaN } }),
      '{"a":[1,null,null,null],"b":{"c":null}}',
    );
  });
});

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { CancelledError, InfluenceError, type ErrorPlace } from '../../src/core/errors';
import { TableReader, readHeader, type Batch, type TableOptions } from '../../src/core/data/table';
import { parseNumber, parseNumBytes } from '../../src/core/data/numbers';
import { readAll } from '../helpers/table';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'il-table-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function write(name: string, content: string | Buffer): string {
  const p = path.join(dir, `${fileNo++}-${name}`);
  fs.writeFileSync(p, content);
  return p;
}

async function expectError(
  fn: () => Promise<unknown>,
  code: string,
  place: Partial<ErrorPlace> = {},
  msg?: RegExp,
): Promise<InfluenceError> {
  let err: unknown;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof InfluenceError, `expected InfluenceError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, `code (message: ${err.message})`);
  for (const [k, v] of Object.entries(place)) {
    assert.equal(err.place[k as keyof ErrorPlace], v, `place.${k} of ${err.format()}`);
  }
  if (msg) assert.match(err.message, msg);
  return err;
}

/** The bytes of each record, as text, using the reported offsets. */
function recordTexts(p: string, offsets: Float64Array): string[] {
  const buf = fs.readFileSync(p);
  const out: string[] = [];
  for (let r = 0; r + 1 < offsets.length; r++) out.push(buf.subarray(offsets[r], offsets[r + 1]).toString('utf8'));
  return out;
}

async function collect(p: string, opts?: TableOptions): Promise<{ reader: TableReader; batches: Batch[] }> {
  const reader = await TableReader.open(p, opts);
  const batches: Batch[] = [];
  for await (const b of reader.batches()) batches.push(b);
  return { reader, batches };
}

const f32 = (xs: number[]): number[] => xs.map((x) => Math.fround(x));

// ---------------------------------------------------------------------------------------

describe('CSV basics', () => {
  test('header, features, labels, lines, offsets, info', async () => {
    const p = write('basic.csv', 'a,b,label\n1,2,0\n3.5,-4,1\n');
    const r = await readAll(p);
    const st = fs.statSync(p);
    assert.deepEqual(r.info, {
      path: p,
      format: 'csv',
      columns: ['a', 'b', 'label'],
      labelColumn: 'label',
      hasLabel: true,
      featureNames: ['a', 'b'],
      featureCount: 2,
      size: 25,
      mtimeMs: st.mtimeMs,
      ctimeMs: st.ctimeMs,
      ino: st.ino,
    });
    assert.deepEqual([...r.features], [1, 2, 3.5, -4]);
    assert.deepEqual([...r.labels], [0, 1]);
    assert.deepEqual([...r.lines], [2, 3]);
    assert.deepEqual([...r.offsets], [10, 16, 25]);
    assert.deepEqual(recordTexts(p, r.offsets), ['1,2,0\n', '3.5,-4,1\n']);
    assert.equal(r.summary.rows, 2);
    assert.equal(r.summary.size, 25);
    assert.equal(r.summary.mtimeMs, st.mtimeMs);
  });

  test('label column in the middle; features keep file order; custom label name', async () => {
    const p = write('mid.csv', 'x,label,y\n1,2,3\n4,5,6\n');
    const r = await readAll(p);
    assert.deepEqual(r.info.featureNames, ['x', 'y']);
    assert.deepEqual([...r.features], [1, 3, 4, 6]);
    assert.deepEqual([...r.labels], [2, 5]);
    const r2 = await readAll(p, { labelColumn: 'x' });
    assert.deepEqual(r2.info.featureNames, ['label', 'y']);
    assert.deepEqual([...r2.labels], [1, 4]);
  });

  test('features option selects a subset in the given order', async () => {
    const p = write('sub.csv', 'a,b,c,label\n1,2,3,0\n4,5,6,1\n');
    const r = await readAll(p, { features: ['c', 'a'] });
    assert.deepEqual(r.info.featureNames, ['c', 'a']);
    assert.equal(r.info.featureCount, 2);
    assert.deepEqual([...r.features], [3, 1, 6, 4]);
  });

  test('CRLF line endings: lines and offsets include the CRLF', async () => {
    const p = write('crlf.csv', 'a,label\r\n1,0\r\n2,1\r\n');
    const r = await readAll(p);
    assert.deepEqual([...r.lines], [2, 3]);
    assert.deepEqual(recordTexts(p, r.offsets), ['1,0\r\n', '2,1\r\n']);
    assert.deepEqual([...r.features], [1, 2]);
  });

  test('lone CR line endings, last record without newline', async () => {
    const p = write('cr.csv', 'a,label\r1,0\r2,1');
    const r = await readAll(p);
    assert.deepEqual([...r.lines], [2, 3]);
    assert.deepEqual(recordTexts(p, r.offsets), ['1,0\r', '2,1']);
    assert.deepEqual([...r.labels], [0, 1]);
  });

  test('mixed LF / CRLF / CR line endings', async () => {
    const p = write('mixed.csv', 'a,label\r\n1,0\r2,1\n3,2');
    const r = await readAll(p);
    assert.deepEqual([...r.lines], [2, 3, 4]);
    assert.deepEqual(recordTexts(p, r.offsets), ['1,0\r', '2,1\n', '3,2']);
  });

  test('UTF-8 BOM is ignored for names but counted in offsets', async () => {
    const p = write('bom.csv', '\uFEFFlabel,a\n0,1\n1,2\n');
    const r = await readAll(p);
    assert.deepEqual(r.info.columns, ['label', 'a']);
    assert.equal(r.offsets[0], 3 + 'label,a\n'.length);
    assert.deepEqual(recordTexts(p, r.offsets), ['0,1\n', '1,2\n']);
    assert.deepEqual([...r.lines], [2, 3]);
    assert.deepEqual(await readHeader(p), ['label', 'a']);
  });

  test('quoted fields with newlines (LF, CRLF, CR) and doubled quotes; lines after them', async () => {
    const content =
      'id,note,label\n' + // line 1
      '1,"hello\nworld",0\n' + // lines 2-3
      '2,"a ""quoted"", word",1\n' + // line 4
      '3,"x\r\ny\rz",0\n' + // lines 5-7
      '4,plain,1'; // line 8
    const p = write('quoted.csv', content);
    const r = await readAll(p, { features: ['id'] });
    assert.deepEqual([...r.features], [1, 2, 3, 4]);
    assert.deepEqual([...r.labels], [0, 1, 0, 1]);
    assert.deepEqual([...r.lines], [2, 4, 5, 8]);
    assert.deepEqual(recordTexts(p, r.offsets), [
      '1,"hello\nworld",0\n',
      '2,"a ""quoted"", word",1\n',
      '3,"x\r\ny\rz",0\n',
      '4,plain,1',
    ]);
  });

  test('quoted header names with separators and doubled quotes; quoted numbers', async () => {
    const p = write('qhead.csv', '"a,b","say ""hi""",label\n"1.5"," 2 ","0"\n');
    const r = await readAll(p);
    assert.deepEqual(r.info.columns, ['a,b', 'say "hi"', 'label']);
    assert.deepEqual([...r.features], [1.5, 2]);
    assert.deepEqual([...r.labels], [0]);
  });

  test('TSV with a quoted tab and newline', async () => {
    const content = 'id\tnote\tlabel\n1\t"tab\there\nnew, line"\t0\n2\tplain\t1\n';
    const p = write('q.tsv', content);
    const r = await readAll(p, { features: ['id'] });
    assert.equal(r.info.format, 'tsv');
    assert.deepEqual(r.info.columns, ['id', 'note', 'label']);
    assert.deepEqual([...r.features], [1, 2]);
    assert.deepEqual([...r.lines], [2, 4]);
    assert.deepEqual(recordTexts(p, r.offsets), ['1\t"tab\there\nnew, line"\t0\n', '2\tplain\t1\n']);
  });

  test('TSV: commas are ordinary characters', async () => {
    const p = write('c.tsv', 'a\tb\tlabel\n1\t2\t0\n');
    const r = await readAll(p);
    assert.deepEqual(r.info.columns, ['a', 'b', 'label']);
    await expectError(() => readAll(write('c2.tsv', 'a\tlabel\n1,5\t0\n')), 'FEATURE_NOT_NUMERIC', { line: 2, col: 1 });
  });

  test('blank lines in the middle and at the end are skipped but counted', async () => {
    const p = write('blank.csv', 'a,label\n\n1,0\n  \n\r\n2,1\n\n\n');
    const r = await readAll(p);
    assert.equal(r.summary.rows, 2);
    assert.deepEqual([...r.lines], [3, 6]);
    assert.equal(r.offsets[0], 9);
    // Blank lines belong to the record before them, so records tile the file.
    assert.deepEqual(recordTexts(p, r.offsets), ['1,0\n  \n\r\n', '2,1\n\n\n']);
    assert.equal(r.offsets[2], fs.statSync(p).size);
  });

  test('blank lines before the header', async () => {
    const p = write('pre.csv', '\n\na,label\n1,0\n');
    const r = await readAll(p);
    assert.deepEqual(r.info.columns, ['a', 'label']);
    assert.deepEqual([...r.lines], [4]);
    await expectError(() => readAll(write('pre2.csv', '\na,a,label\n')), 'CSV_DUPLICATE_COLUMN', { line: 2, col: 3 });
  });

  test('header without data rows gives zero rows', async () => {
    for (const content of ['a,label\n', 'a,label', 'a,label\r\n\r\n\n']) {
      const p = write('hdr.csv', content);
      const r = await readAll(p);
      assert.equal(r.summary.rows, 0);
      assert.equal(r.features.length, 0);
      assert.equal(r.labels.length, 0);
      assert.deepEqual([...r.offsets], [content.length]);
      const { batches } = await collect(p);
      assert.equal(batches.length, 0);
    }
  });

  test('requireLabel false: missing label gives -1 and every column is a feature', async () => {
    const p = write('nolabel.csv', 'a,b\n1,2\n3,4\n');
    const r = await readAll(p, { requireLabel: false });
    assert.equal(r.info.hasLabel, false);
    assert.deepEqual(r.info.featureNames, ['a', 'b']);
    assert.deepEqual([...r.labels], [-1, -1]);
    assert.deepEqual([...r.features], [1, 2, 3, 4]);
    // With the label present, requireLabel false still reads it.
    const r2 = await readAll(p, { requireLabel: false, labelColumn: 'b' });
    assert.deepEqual([...r2.labels], [2, 4]);
  });
});

describe('numbers', () => {
  test('accepted forms equal Math.fround(Number(text))', async () => {
    const values = [
      ' 1.5 ',
      '+2',
      '-3e-2',
      '1E3',
      '.5',
      '5.',
      '0',
      '-0',
      '  -7\t',
      '123456789012345678',
      '1.00000000000000000001',
      '3.4e38',
      '1e-50',
      '0.1',
      '-0.000123456789',
      '6.02214076e23',
      '00012',
    ];
    const p = write('nums.csv', 'x,label\n' + values.map((v) => `${v},0`).join('\n') + '\n');
    const r = await readAll(p);
    const want = values.map((v) => Math.fround(Number(v)));
    assert.deepEqual([...r.features], want);
    assert.ok(Object.is(r.features[7], -0));
  });

  test('byte parser matches Number() exactly on random numerals', () => {
    let seed = 12345;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const digits = (n: number): string => Array.from({ length: n }, () => String(Math.floor(rnd() * 10))).join('');
    for (let k = 0; k < 5000; k++) {
      let s = rnd() < 0.3 ? '-' : '';
      s += digits(1 + Math.floor(rnd() * 12));
      if (rnd() < 0.7) s += '.' + digits(Math.floor(rnd() * 20));
      if (rnd() < 0.4) s += 'e' + (rnd() < 0.5 ? '-' : '') + String(Math.floor(rnd() * 60));
      const got = parseNumBytes(Buffer.from(s), 0, s.length);
      assert.ok(Object.is(got, Number(s)), `${s}: ${got} vs ${Number(s)}`);
      assert.ok(Object.is(parseNumber(s), Number(s)), s);
    }
  });

  test('non-numeric features: FEATURE_NOT_NUMERIC at line:col naming column and text', async () => {
    const bad = ['', 'abc', '1.2.3', '0x10', '1e', '--1', '1 2', '.', '+', '1e+', '1_000', '١', '"1"""', '""', 'e5'];
    for (const v of bad) {
      const p = write('bad.csv', `label,x\n0,1\n1,${v}\n`);
      const err = await expectError(() => readAll(p), 'FEATURE_NOT_NUMERIC', { file: p, line: 3, col: 3 });
      assert.match(err.message, /"x"/, v);
      const shown = v.startsWith('"') ? v.slice(1, -1).replace(/""/g, '"') : v;
      if (shown.trim() !== '') assert.ok(err.message.includes(JSON.stringify(shown.trim())), `${v}: ${err.message}`);
      else assert.match(err.message, /empty/);
    }
  });

  test('non-finite features: FEATURE_NOT_FINITE', async () => {
    for (const v of ['NaN', 'nan', 'inf', 'Infinity', '-inf', '+Infinity', '1e39', '-1e39', '1e400']) {
      const p = write('inf.csv', `x,label\n${v},0\n`);
      const err = await expectError(() => readAll(p), 'FEATURE_NOT_FINITE', { line: 2, col: 1 });
      assert.ok(err.message.includes(v), err.message);
    }
  });

  test('long offending text is truncated in the message', async () => {
    const long = 'z'.repeat(500);
    const p = write('long.csv', `x,label\n${long},0\n`);
    const err = await expectError(() => readAll(p), 'FEATURE_NOT_NUMERIC');
    assert.ok(err.message.length < 150, err.message);
    assert.ok(err.message.includes('…'));
  });

  test('feature error inside a multi-line record names the line and column of the field', async () => {
    const p = write('ml.csv', 'note,x,label\n"a\nb",1,0\n"c\nd\ne",zz,1\n');
    await expectError(() => readAll(p, { features: ['x'] }), 'FEATURE_NOT_NUMERIC', { line: 6, col: 4 }, /"zz"/);
  });

  test('a CRLF inside quotes counts as one line', async () => {
    const p = write('mlcrlf.csv', 'n,x,label\r\n"a\r\nb",zz,0\r\n');
    await expectError(() => readAll(p, { features: ['x'] }), 'FEATURE_NOT_NUMERIC', { line: 3, col: 4 });
  });

  test('column counts characters, not bytes', async () => {
    const p = write('utf.csv', 'note,x,label\nüü猫,bad,0\n');
    await expectError(() => readAll(p, { features: ['x'] }), 'FEATURE_NOT_NUMERIC', { line: 2, col: 5 });
  });
});

describe('labels', () => {
  const file = (labels: string[]): string =>
    write('lab.csv', 'x,label\n' + labels.map((l) => `1,${l}`).join('\n') + '\n');

  test('integer forms', async () => {
    const r = await readAll(file(['3', ' 3 ', '3.0', '+3', '1e0', '0', '"7"', '12.000']));
    assert.deepEqual([...r.labels], [3, 3, 3, 3, 1, 0, 7, 12]);
  });

  test('non-integer without classes: LABEL_INVALID suggesting --classes', async () => {
    await expectError(() => readAll(file(['1', '3.5'])), 'LABEL_INVALID', { line: 3, col: 3 }, /--classes/);
    await expectError(() => readAll(file(['cat'])), 'LABEL_INVALID', { line: 2 }, /"cat".*--classes/);
  });

  test('empty label: LABEL_INVALID', async () => {
    await expectError(() => readAll(file(['0', ''])), 'LABEL_INVALID', { line: 3, col: 3 }, /empty/);
    await expectError(() => readAll(file(['""'])), 'LABEL_INVALID', { line: 2 }, /empty/);
    await expectError(() => readAll(file(['  '])), 'LABEL_INVALID', { line: 2 }, /empty/);
  });

  test('class names are mapped through classes; integers stay ids', async () => {
    const r = await readAll(file(['dog', ' cat ', '1', '"a""b"', 'ü猫']), { classes: ['cat ', 'dog', 'a"b', 'ü猫'] });
    assert.deepEqual([...r.labels], [1, 0, 1, 2, 3]);
  });

  test('unknown class: LABEL_UNKNOWN_CLASS listing up to 20 classes', async () => {
    const err = await expectError(
      () => readAll(file(['cat', 'bird']), { classes: ['cat', 'dog'] }),
      'LABEL_UNKNOWN_CLASS',
      { line: 3, col: 3 },
      /"bird".*"cat", "dog"/,
    );
    assert.ok(err.message.includes('2'));
    const many = Array.from({ length: 25 }, (_, i) => `c${i}`);
    const err2 = await expectError(() => readAll(file(['zz']), { classes: many }), 'LABEL_UNKNOWN_CLASS');
    assert.ok(err2.message.includes('"c19"'));
    assert.ok(!err2.message.includes('"c20"'));
    assert.match(err2.message, /5 more/);
  });

  test('out of range: negative, >= numClasses, >= classes.length', async () => {
    await expectError(() => readAll(file(['0', '-1'])), 'LABEL_OUT_OF_RANGE', { line: 3, col: 3 });
    await expectError(() => readAll(file(['2', '3']), { numClasses: 3 }), 'LABEL_OUT_OF_RANGE', { line: 3 }, /0\.\.2/);
    const ok = await readAll(file(['2']), { numClasses: 3 });
    assert.deepEqual([...ok.labels], [2]);
    await expectError(() => readAll(file(['2']), { classes: ['a', 'b'] }), 'LABEL_OUT_OF_RANGE', { line: 2 }, /0\.\.1/);
    await expectError(() => readAll(file(['99999999999'])), 'LABEL_OUT_OF_RANGE', { line: 2 });
  });
});

describe('CSV errors', () => {
  test('empty file: EMPTY_FILE (0 bytes, BOM only, whitespace only)', async () => {
    for (const content of ['', '\uFEFF', ' \n\r\n \n', '\uFEFF\r\n']) {
      const p = write('empty.csv', content);
      await expectError(() => TableReader.open(p), 'EMPTY_FILE', { file: p });
      await expectError(() => readHeader(p), 'EMPTY_FILE');
    }
    await expectError(() => readAll(write('empty.jsonl', '\n\n')), 'EMPTY_FILE');
  });

  test('duplicate column: CSV_DUPLICATE_COLUMN at the second occurrence', async () => {
    await expectError(
      () => TableReader.open(write('dup.csv', 'a,b,a,label\n1,2,3,0\n')),
      'CSV_DUPLICATE_COLUMN',
      { line: 1, col: 5 },
      /"a"/,
    );
    // A BOM does not count as a character of the first column name.
    await expectError(() => readHeader(write('dupbom.csv', '\uFEFFab,ab\n')), 'CSV_DUPLICATE_COLUMN', {
      line: 1,
      col: 4,
    });
  });

  test('ragged rows: CSV_RAGGED_ROW with expected and found counts', async () => {
    const e1 = await expectError(() => readAll(write('rag.csv', 'a,b,label\n1,2,0\n1,2\n')), 'CSV_RAGGED_ROW', {
      line: 3,
    });
    assert.match(e1.message, /expected 3 .*found 2/);
    const e2 = await expectError(() => readAll(write('rag2.csv', 'a,b,label\n"x\ny",2,0,9\n')), 'CSV_RAGGED_ROW', {
      line: 2,
    });
    assert.match(e2.message, /found 4/);
    // Line number after a multi-line quoted field.
    await expectError(
      () => readAll(write('rag3.csv', 'n,a,label\n"x\n\ny",2,0\n1,2\n'), { features: ['a'] }),
      'CSV_RAGGED_ROW',
      { line: 5 },
    );
    // Many fields (more than the initial field capacity).
    const e4 = await expectError(
      () => readAll(write('rag4.csv', 'a,label\n' + '1,'.repeat(200) + '1\n')),
      'CSV_RAGGED_ROW',
    );
    assert.match(e4.message, /found 201/);
  });

  test('bad quotes: CSV_BAD_QUOTE at line:col', async () => {
    await expectError(() => readAll(write('bq1.csv', 'a,label\n1,0\n12,ab"c\n')), 'CSV_BAD_QUOTE', { line: 3, col: 6 });
    await expectError(() => readAll(write('bq2.csv', 'a,label\n1,0\n"1"x,0\n')), 'CSV_BAD_QUOTE', { line: 3, col: 4 });
    await expectError(() => readAll(write('bq3.csv', 'a,label\n"1\n2" ,0\n')), 'CSV_BAD_QUOTE', { line: 3, col: 3 });
    await expectError(() => readHeader(write('bq4.csv', 'a,b"\n')), 'CSV_BAD_QUOTE', { line: 1, col: 4 });
  });

  test('EOF inside quotes: CSV_UNTERMINATED_QUOTE naming the start line', async () => {
    const p = write('unterm.csv', 'a,label\n1,0\n2,"abc\n\ndef\n');
    await expectError(() => readAll(p), 'CSV_UNTERMINATED_QUOTE', { file: p, line: 3, col: 3 }, /line 3/);
    await expectError(() => readAll(write('unterm2.csv', 'a,label\n1,"x""')), 'CSV_UNTERMINATED_QUOTE', { line: 2 });
    await expectError(() => readHeader(write('unterm3.csv', '"a')), 'CSV_UNTERMINATED_QUOTE', { line: 1, col: 1 });
  });

  test('missing label column: LABEL_COLUMN_MISSING lists available columns', async () => {
    const p = write('nolab.csv', 'a,b,target\n1,2,0\n');
    await expectError(() => TableReader.open(p), 'LABEL_COLUMN_MISSING', { file: p }, /"label".*"a", "b", "target"/);
    const r = await readAll(p, { labelColumn: 'target' });
    assert.deepEqual([...r.labels], [0]);
  });

  test('unknown feature column: FEATURE_COLUMN_MISSING lists available columns', async () => {
    const p = write('nofeat.csv', 'a,b,label\n1,2,0\n');
    await expectError(
      () => TableReader.open(p, { features: ['a', 'zzz'] }),
      'FEATURE_COLUMN_MISSING',
      {},
      /"zzz".*"a", "b", "label"/,
    );
  });

  test('bad options: BAD_OPTION', async () => {
    const p = write('opt.csv', 'a,b,label\n1,2,0\n');
    await expectError(() => TableReader.open(p, { features: ['a', 'label'] }), 'BAD_OPTION', {}, /label/);
    await expectError(() => TableReader.open(p, { features: ['a', 'b'], labelColumn: 'b' }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { batchSize: 0 }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { numClasses: 1.5 }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { features: [] }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { features: ['a', 'a'] }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { classes: ['x', 'x'] }), 'BAD_OPTION');
    await expectError(() => TableReader.open(p, { format: 'xml' as never }), 'BAD_OPTION');
  });
});

describe('files and formats', () => {
  test('format from extension and override', async () => {
    const tsv = 'a\tlabel\n1\t0\n';
    assert.equal((await TableReader.open(write('x.tab', tsv))).info.format, 'tsv');
    assert.equal((await TableReader.open(write('x.TSV', tsv))).info.format, 'tsv');
    assert.equal((await TableReader.open(write('x.ndjson', '{"a":1,"label":0}\n'))).info.format, 'jsonl');
    const txt = write('x.txt', 'a,label\n1,0\n');
    await expectError(() => TableReader.open(txt), 'UNSUPPORTED_FORMAT', { file: txt }, /\.csv/);
    await expectError(() => readHeader(txt), 'UNSUPPORTED_FORMAT');
    const r = await readAll(txt, { format: 'csv' });
    assert.deepEqual([...r.features], [1]);
    assert.deepEqual(await readHeader(txt, 'csv'), ['a', 'label']);
  });

  test('missing file: FILE_NOT_FOUND with the path', async () => {
    const p = path.join(dir, 'does-not-exist.csv');
    await expectError(() => TableReader.open(p), 'FILE_NOT_FOUND', { file: p }, /does-not-exist\.csv/);
    await expectError(() => readHeader(p), 'FILE_NOT_FOUND');
  });

  test('directory or unreadable: FILE_UNREADABLE', async () => {
    const d = path.join(dir, 'adir.csv');
    fs.mkdirSync(d);
    await expectError(() => TableReader.open(d), 'FILE_UNREADABLE', { file: d });
    if (process.getuid?.() !== 0 && process.platform !== 'win32') {
      const p = write('locked.csv', 'a,label\n1,0\n');
      fs.chmodSync(p, 0);
      await expectError(() => TableReader.open(p), 'FILE_UNREADABLE');
    }
  });

  test('readHeader for CSV, TSV and JSONL does not need a label', async () => {
    assert.deepEqual(await readHeader(write('h.csv', 'x,"y z",w\n1,2,3\n')), ['x', 'y z', 'w']);
    assert.deepEqual(await readHeader(write('h.tsv', 'x\ty,z\n')), ['x', 'y,z']);
    assert.deepEqual(await readHeader(write('h.jsonl', '\n{"b":1,"a":[1,2],"label":"x"}\n{"c":2}\n')), [
      'b',
      'a',
      'label',
    ]);
  });
});

describe('JSONL', () => {
  test('objects, nested arrays flatten, numeric strings, blank lines, CRLF, offsets', async () => {
    const lines = [
      '{"x": 1, "v": [1, 2, [3]], "label": 0}\n',
      '\n',
      '{"x": "2.5", "v": [[4], 5, 6], "label": "1", "extra": true}\r\n',
      '{"label": 1, "v": [7,8,9], "x": -1e-3}',
    ];
    const p = write('a.jsonl', lines.join(''));
    const r = await readAll(p);
    assert.equal(r.info.format, 'jsonl');
    assert.deepEqual(r.info.columns, ['x', 'v', 'label']);
    assert.deepEqual(r.info.featureNames, ['x', 'v']);
    assert.equal(r.info.featureCount, 4);
    assert.deepEqual([...r.features], f32([1, 1, 2, 3, 2.5, 4, 5, 6, -1e-3, 7, 8, 9]));
    assert.deepEqual([...r.labels], [0, 1, 1]);
    assert.deepEqual([...r.lines], [1, 3, 4]);
    assert.deepEqual(recordTexts(p, r.offsets), [lines[0] + lines[1], lines[2], lines[3]]);
    assert.equal(r.offsets[0], 0);
  });

  test('BOM and lone CR', async () => {
    const p = write('bom.jsonl', '\uFEFF{"a":1,"label":0}\r{"a":2,"label":1}\r');
    const r = await readAll(p);
    assert.deepEqual(r.info.columns, ['a', 'label']);
    assert.equal(r.offsets[0], 3);
    assert.deepEqual(recordTexts(p, r.offsets), ['{"a":1,"label":0}\r', '{"a":2,"label":1}\r']);
    assert.deepEqual([...r.lines], [1, 2]);
  });

  test('labels: class names, invalid, out of range', async () => {
    const p = write('lab.jsonl', '{"a":1,"label":"dog"}\n{"a":2,"label":0}\n');
    const r = await readAll(p, { classes: ['cat', 'dog'] });
    assert.deepEqual([...r.labels], [1, 0]);
    await expectError(() => readAll(p), 'LABEL_INVALID', { line: 1 }, /--classes/);
    await expectError(() => readAll(write('l2.jsonl', '{"a":1,"label":0}\n{"a":1,"label":2.5}\n')), 'LABEL_INVALID', {
      line: 2,
    });
    await expectError(() => readAll(write('l3.jsonl', '{"a":1,"label":true}\n')), 'LABEL_INVALID', { line: 1 });
    await expectError(() => readAll(write('l4.jsonl', '{"a":1,"label":null}\n')), 'LABEL_INVALID', { line: 1 });
    await expectError(() => readAll(write('l5.jsonl', '{"a":1,"label":-1}\n')), 'LABEL_OUT_OF_RANGE', { line: 1 });
    await expectError(
      () => readAll(write('l6.jsonl', '{"a":1,"label":5}\n'), { numClasses: 5 }),
      'LABEL_OUT_OF_RANGE',
      { line: 1 },
    );
    await expectError(
      () => readAll(write('l7.jsonl', '{"a":1,"label":"bird"}\n'), { classes: ['cat'] }),
      'LABEL_UNKNOWN_CLASS',
      { line: 1 },
    );
  });

  test('JSONL_KEYS_DIFFER when a used key is missing (unused keys may vary)', async () => {
    const ok = await readAll(write('k0.jsonl', '{"a":1,"note":"x","label":0}\n{"a":2,"label":1}\n'), {
      features: ['a'],
    });
    assert.deepEqual([...ok.features], [1, 2]);
    await expectError(
      () => readAll(write('k1.jsonl', '{"a":1,"b":2,"label":0}\n{"a":1,"label":0}\n')),
      'JSONL_KEYS_DIFFER',
      { line: 2 },
      /"b"/,
    );
    await expectError(
      () => readAll(write('k2.jsonl', '{"a":1,"label":0}\n\n{"a":1}\n')),
      'JSONL_KEYS_DIFFER',
      { line: 3 },
      /"label"/,
    );
    // Keys that exist on Object.prototype must still be own keys.
    await expectError(
      () => readAll(write('k3.jsonl', '{"constructor":1,"label":0}\n{"label":1}\n')),
      'JSONL_KEYS_DIFFER',
      { line: 2 },
    );
  });

  test('JSONL_NOT_OBJECT and JSONL_PARSE', async () => {
    await expectError(
      () => readAll(write('n1.jsonl', '{"a":1,"label":0}\n[1,2]\n')),
      'JSONL_NOT_OBJECT',
      { line: 2 },
      /array/,
    );
    await expectError(() => readAll(write('n2.jsonl', '5\n')), 'JSONL_NOT_OBJECT', { line: 1 });
    await expectError(() => readAll(write('n3.jsonl', '{"a":1,"label":0}\nnull\n')), 'JSONL_NOT_OBJECT', { line: 2 });
    await expectError(() => readAll(write('p1.jsonl', '{"a":1,"label":0}\n\n{"a": 1,\n')), 'JSONL_PARSE', { line: 3 });
    await expectError(() => TableReader.open(write('p2.jsonl', '{a:1}\n')), 'JSONL_PARSE', { line: 1 });
  });

  test('FEATURE_SHAPE when the flattened width differs from the first record', async () => {
    await expectError(
      () => readAll(write('s1.jsonl', '{"v":[1,2,3],"label":0}\n{"v":[1,2],"label":0}\n')),
      'FEATURE_SHAPE',
      { line: 2 },
      /"v".*2.*3/,
    );
    await expectError(
      () => readAll(write('s2.jsonl', '{"v":[1,2,3],"label":0}\n{"v":[1,2,3,4],"label":0}\n')),
      'FEATURE_SHAPE',
      { line: 2 },
    );
    await expectError(
      () => readAll(write('s3.jsonl', '{"v":[1,[2,3]],"label":0}\n{"v":5,"label":0}\n')),
      'FEATURE_SHAPE',
      { line: 2 },
    );
  });

  test('non-numeric and non-finite JSONL values', async () => {
    for (const v of ['"abc"', 'true', 'null', '{"q":1}', '["1", false]', '""']) {
      await expectError(
        () => readAll(write('nn.jsonl', `{"a":${v},"label":0}\n`)),
        'FEATURE_NOT_NUMERIC',
        { line: 1 },
        /"a"/,
      );
    }
    for (const v of ['1e400', '"NaN"', '"inf"', '[1, "-Infinity"]', '"1e39"']) {
      await expectError(
        () => readAll(write('nf.jsonl', `{"a":1,"label":0}\n{"a":${v},"label":0}\n`)),
        'FEATURE_NOT_FINITE',
        { line: 2 },
      );
    }
  });

  test('missing label key in the first object', async () => {
    const p = write('nl.jsonl', '{"a":1,"b":2}\n');
    await expectError(() => TableReader.open(p), 'LABEL_COLUMN_MISSING', {}, /"a", "b"/);
    const r = await readAll(p, { requireLabel: false });
    assert.deepEqual([...r.labels], [-1]);
    assert.deepEqual([...r.features], [1, 2]);
  });
});

describe('batching and chunking', () => {
  const content = 'a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n';

  test('batchSize 2 with 5 rows gives 2+2+1 with chained offsets', async () => {
    const p = write('b.csv', content);
    const { batches } = await collect(p, { batchSize: 2 });
    assert.deepEqual(
      batches.map((b) => b.count),
      [2, 2, 1],
    );
    assert.deepEqual(
      batches.map((b) => b.start),
      [0, 2, 4],
    );
    for (const b of batches) {
      assert.equal(b.features.length, b.count * 2);
      assert.equal(b.labels.length, b.count);
      assert.equal(b.lines.length, b.count);
      assert.equal(b.offsets.length, b.count + 1);
    }
    for (let k = 0; k + 1 < batches.length; k++)
      assert.equal(batches[k].offsets[batches[k].count], batches[k + 1].offsets[0]);
    assert.deepEqual([...batches[1].features], [5, 6, 7, 8]);
    assert.deepEqual([...batches[2].lines], [6]);
    assert.deepEqual([...batches[2].offsets], [content.length - 7, content.length]);
    const all = await readAll(p, { batchSize: 2 });
    const single = await readAll(p);
    assert.deepEqual(all.features, single.features);
    assert.deepEqual(all.offsets, single.offsets);
    assert.deepEqual(all.lines, single.lines);
  });

  test('a few rows wider than a whole batch can hold are read (a batch allocates only the rows it has)', async () => {
    // 1.1M columns: 4096 rows of them would be 4.5e9 values, more than a typed array holds (was a RangeError).
    const n = 1_100_000;
    const header = Array.from({ length: n }, (_, k) => (k === 0 ? 'label' : `c${k}`)).join(',');
    const row = (r: number) => Array.from({ length: n }, (_, k) => (k === 0 ? '1' : String((k + r) % 10))).join(',');
    const p = write('wide.csv', [header, row(0), row(1), row(2)].join('\n') + '\n');
    const { batches } = await collect(p);
    assert.deepEqual(
      batches.map((b) => b.count),
      [3],
    );
    const b = batches[0];
    assert.equal(b.features.length, 3 * (n - 1));
    assert.deepEqual([b.features[0], b.features[n - 1], b.features[2 * (n - 1) + 8]], [1, 2, 1]);
    assert.equal(b.offsets.length, 4);
  });

  test('rows an exact multiple of batchSize', async () => {
    const p = write('b4.csv', 'a,label\n1,0\n2,0\n3,0\n4,0\n');
    const { batches, reader } = await collect(p, { batchSize: 2 });
    assert.deepEqual(
      batches.map((b) => b.count),
      [2, 2],
    );
    assert.equal(reader.summary().rows, 4);
  });

  test('tiny read chunks give identical results (fields, CRLF, BOM, UTF-8 split across reads)', async () => {
    const csv =
      '\uFEFFid,"no,te",label\r\n' +
      '1.25,"multi\r\nline ""q""",猫\r\n' +
      '\r\n' +
      '-2e-3,ü,dog\r' +
      '3,"x",猫\n' +
      '44444.5,' +
      'y'.repeat(300) +
      ',dog';
    const p = write('chunks.csv', csv);
    const opts: TableOptions = { features: ['id'], classes: ['dog', '猫'], batchSize: 3 };
    const ref = await readAll(p, opts);
    assert.deepEqual([...ref.features], f32([1.25, -2e-3, 3, 44444.5]));
    assert.deepEqual([...ref.labels], [1, 0, 1, 0]);
    assert.deepEqual([...ref.lines], [2, 5, 6, 7]);
    assert.equal(ref.info.columns[1], 'no,te');
    for (const chunkSize of [1, 2, 3, 4, 5, 7, 11, 64]) {
      const r = await readAll(p, { ...opts, chunkSize });
      assert.deepEqual(r.features, ref.features, `chunk ${chunkSize}`);
      assert.deepEqual(r.labels, ref.labels);
      assert.deepEqual(r.lines, ref.lines);
      assert.deepEqual(r.offsets, ref.offsets);
      assert.deepEqual(r.info.columns, ref.info.columns);
      assert.equal(r.summary.sha256, ref.summary.sha256);
    }
    const jl = '\uFEFF{"v":[1,2],"label":"猫"}\r\n\r\n{"v":[3,4],"label":"dog"}\r{"v":[5,6],"label":0}';
    const pj = write('chunks.jsonl', jl);
    const refJ = await readAll(pj, { classes: ['dog', '猫'] });
    assert.deepEqual([...refJ.features], [1, 2, 3, 4, 5, 6]);
    for (const chunkSize of [1, 2, 3, 5, 8]) {
      const r = await readAll(pj, { classes: ['dog', '猫'], chunkSize });
      assert.deepEqual(r.features, refJ.features);
      assert.deepEqual(r.labels, refJ.labels);
      assert.deepEqual(r.lines, refJ.lines);
      assert.deepEqual(r.offsets, refJ.offsets);
    }
  });

  test('CRLF split exactly between two reads', async () => {
    // 'a,label\r' is 8 bytes, so the first 8-byte read ends between CR and LF.
    const p = write('split.csv', 'a,label\r\n1,0\r\n2,1\r\n');
    const r = await readAll(p, { chunkSize: 8 });
    assert.deepEqual([...r.lines], [2, 3]);
    assert.equal(r.offsets[0], 9);
    assert.deepEqual(recordTexts(p, r.offsets), ['1,0\r\n', '2,1\r\n']);
  });

  test('errors keep their line:col with tiny chunks', async () => {
    const p = write('errchunk.csv', 'n,x,label\n"a\nb",1,0\n"c\nd",bad,1\n');
    for (const chunkSize of [1, 3, 6]) {
      await expectError(() => readAll(p, { features: ['x'], chunkSize }), 'FEATURE_NOT_NUMERIC', { line: 5, col: 4 });
    }
    await expectError(
      () => readAll(write('errchunk2.csv', 'a,label\n1,0\n2,"abc\n'), { chunkSize: 2 }),
      'CSV_UNTERMINATED_QUOTE',
      { line: 3 },
    );
  });

  test('a record much larger than the read chunk', async () => {
    const big = 'q'.repeat(100000);
    const p = write('bigrec.csv', `n,a,label\n"${big}\n${big}",1,0\n2,3,1\n`);
    let reads = 0;
    const r = await readAll(p, { features: ['a'], chunkSize: 16, onProgress: () => reads++ });
    assert.deepEqual([...r.features], [1, 3]);
    // Reads grow with the pending record instead of rescanning it every 16 bytes.
    assert.ok(reads < 100, `reads: ${reads}`);
    assert.deepEqual([...r.lines], [2, 4]);
  });
});

describe('summary, progress, cancellation, file changes', () => {
  test('sha256 of the file bytes; summary only after batches()', async () => {
    const content = '\uFEFFa,label\r\n1,0\r\n2,1\r\n';
    const p = write('sha.csv', content);
    const reader = await TableReader.open(p, { chunkSize: 5 });
    assert.throws(() => reader.summary());
    for await (const b of reader.batches()) assert.ok(b.count > 0);
    const s = reader.summary();
    assert.equal(s.sha256, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
    assert.equal(s.rows, 2);
    assert.equal(s.size, Buffer.byteLength(content));
  });

  test('batches() may be called only once', async () => {
    const reader = await TableReader.open(write('once.csv', 'a,label\n1,0\n'));
    for await (const b of reader.batches()) assert.equal(b.count, 1);
    await assert.rejects(async () => {
      for await (const b of reader.batches()) assert.ok(b);
    }, /only once/);
  });

  test('progress is reported per chunk, not per row', async () => {
    const rows = Array.from({ length: 2000 }, (_, i) => `${i},${i % 3}`).join('\n');
    const p = write('prog.csv', 'a,label\n' + rows + '\n');
    const size = fs.statSync(p).size;
    const calls: [string, number, number][] = [];
    await readAll(p, { onProgress: (s, d, t) => calls.push([s, d, t]) });
    assert.ok(calls.length >= 2 && calls.length <= 4, `calls: ${calls.length}`);
    assert.ok(calls.every(([s, , t]) => s === 'read' && t === size));
    assert.equal(calls[calls.length - 1][1], size);
    const small: number[] = [];
    await readAll(p, { chunkSize: 4096, onProgress: (_s, d) => small.push(d) });
    assert.ok(small.length >= Math.floor(size / 4096));
    for (let k = 1; k < small.length; k++) assert.ok(small[k] >= small[k - 1]);
  });

  test('cancellation before open and between batches', async () => {
    const p = write('cancel.csv', 'a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n');
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(() => TableReader.open(p, { signal: ac.signal }), CancelledError);

    const ac2 = new AbortController();
    const reader = await TableReader.open(p, { batchSize: 2, signal: ac2.signal });
    let seen = 0;
    await assert.rejects(async () => {
      for await (const b of reader.batches()) {
        seen += b.count;
        ac2.abort();
      }
    }, CancelledError);
    assert.equal(seen, 2);

    // Aborted while reading (from the progress callback) with small chunks.
    const ac3 = new AbortController();
    let last = 0;
    await assert.rejects(
      () =>
        readAll(p, {
          chunkSize: 4,
          signal: ac3.signal,
          onProgress: (_s, d) => {
            last = d;
            if (d > 10) ac3.abort();
          },
        }),
      CancelledError,
    );
    assert.ok(last > 10 && last <= 16, `stopped reading at ${last}`);
  });

  test('FILE_CHANGED when the file grows while it is read', async () => {
    const p = write('grow.csv', 'a,label\n1,0\n2,1\n3,0\n');
    let appended = false;
    await expectError(
      () =>
        readAll(p, {
          chunkSize: 4,
          onProgress: (_s, d) => {
            if (d > 0 && !appended) {
              appended = true;
              fs.appendFileSync(p, '4,1\n5,0\n');
            }
          },
        }),
      'FILE_CHANGED',
      { file: p },
      /changed while it was being read; run again/,
    );
    assert.ok(appended);
  });

  test('FILE_CHANGED (not an endless read) when the file keeps growing', { timeout: 10_000 }, async () => {
    const p = write('grows.csv', 'a,label\n1,0\n');
    await expectError(
      () => readAll(p, { chunkSize: 4, onProgress: (_s, d) => d > 0 && fs.appendFileSync(p, '2,1\n3,1\n') }),
      'FILE_CHANGED',
    );
  });

  test('FILE_CHANGED when truncated or touched between open() and batches()', async () => {
    const p = write('trunc.csv', 'a,label\n1,0\n2,1\n');
    const reader = await TableReader.open(p);
    fs.writeFileSync(p, 'a,label\n1,0\n');
    await expectError(async () => {
      for await (const b of reader.batches()) assert.ok(b);
    }, 'FILE_CHANGED');

    const q = write('touch.csv', 'a,label\n1,0\n2,1\n');
    const reader2 = await TableReader.open(q);
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(q, later, later);
    await expectError(async () => {
      for await (const b of reader2.batches()) assert.ok(b);
    }, 'FILE_CHANGED');
  });

  test('FILE_CHANGED when modified mid-read without a size change (mtime) or shrunk mid-read', async () => {
    const p = write('mtime.csv', 'a,label\n1,0\n2,1\n3,0\n');
    let touched = false;
    await expectError(
      () =>
        readAll(p, {
          chunkSize: 4,
          onProgress: (_s, d) => {
            if (d > 0 && !touched) {
              touched = true;
              const later = new Date(Date.now() + 120_000);
              fs.utimesSync(p, later, later);
            }
          },
        }),
      'FILE_CHANGED',
    );
    const q = write('shrink.csv', 'a,label\n1,0\n2,1\n3,0\n');
    let cut = false;
    await expectError(
      () =>
        readAll(q, {
          chunkSize: 4,
          onProgress: (_s, d) => {
            if (d > 0 && !cut) {
              cut = true;
              fs.truncateSync(q, 14); // leaves a ragged last row 'a,label\n1,0\n2,'
            }
          },
        }),
      'FILE_CHANGED',
    );
  });
});

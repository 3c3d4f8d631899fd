/** The built CLI (dist/cli.js) end to end: exit codes, error lines, JSON contract. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { buildModel, mkNode, rng, serialize, valueInfo } from '../helpers/models';

const CLI = resolve(__dirname, '../../dist/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'il-cli-'));
const F = 4;
const C = 3;

function file(name: string, content: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function csv(n: number, seed: number): string {
  const r = rng(seed);
  const rows = ['a,b,c,d,label'];
  for (let i = 0; i < n; i++) rows.push([r(), r(), r(), r()].map((v) => v.toFixed(3)).join(',') + `,${i % C}`);
  return rows.join('\n') + '\n';
}

const model = file(
  'm.onnx',
  buildModel({ F, D: 5, C, head: 'gemmTransB', trailing: 'softmax', metadata: { 'influence_lens.l2': '0.01' } }).bytes,
);
const train = file('train.csv', csv(30, 1));
const test = file('test.csv', csv(5, 2));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, XDG_CACHE_HOME: join(dir, 'xdg') },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function explain(over: Record<string, string> = {}, ...extra: string[]) {
  const opts: Record<string, string> = { model, train, test, 'test-row': '0', ...over };
  return cli('explain', ...Object.entries(opts).flatMap(([k, v]) => [`--${k}`, v]), ...extra);
}

/** Exit 2, empty stdout, one `error[CODE] place: message` line on stderr, no stack trace. */
function assertUserError(r: ReturnType<typeof cli>, code: string, place?: RegExp): string {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], new RegExp(`^error\\[${code}\\][ :]`));
  if (place) assert.match(lines[0], place);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0];
}

describe('explain JSON contract', () => {
  it('prints exactly one JSON object with one score per training row, in file order', () => {
    const r = explain({}, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.version, 1);
    assert.equal(j.train.rows, 30);
    assert.equal(j.scores.length, 30);
    assert.deepEqual(
      j.scores.map((s: { row: number }) => s.row),
      Array.from({ length: 30 }, (_, i) => i),
    );
    assert.deepEqual(
      j.scores.slice(0, 2).map((s: { line: number }) => s.line),
      [2, 3],
    );
    assert.equal(j.damping, 0.01);
    assert.equal(j.model.output, 'probabilities');
    assert.equal(j.model.parameters, C * 6);
    assert.equal(j.test.line, 2);
    assert.equal(j.test.probabilities.length, C);
    for (const s of j.scores) {
      assert.ok(Math.abs(s.lossChangeIfRemoved + s.influence / 30) <= 1e-12 * Math.abs(s.influence) + 1e-300);
      assert.ok(s.selfInfluence >= 0);
      assert.ok(
        Math.abs(s.relativeInfluence - s.influence / Math.sqrt(s.selfInfluence)) <=
          1e-9 * Math.abs(s.relativeInfluence),
      );
    }
    assert.ok(['exact', 'ekfac'].includes(j.selfInfluenceMethod));
    assert.ok(typeof j.seconds.total === 'number');
  });

  it('--top N lists the N most helpful and N most harmful rows', () => {
    const all = JSON.parse(explain({}, '--json').stdout);
    const j = JSON.parse(explain({ top: '3' }, '--json').stdout);
    const byChange = [...all.scores].sort((a, b) => b.lossChangeIfRemoved - a.lossChangeIfRemoved);
    assert.deepEqual(
      j.helpful,
      byChange.slice(0, 3).map((s) => s.row),
    );
    assert.deepEqual(
      j.harmful,
      byChange
        .slice(-3)
        .reverse()
        .map((s) => s.row),
    );
    assert.equal(j.scores.length, 6);
    assert.deepEqual(
      j.scores.map((s: { row: number }) => s.row),
      [...j.helpful, ...j.harmful].sort((a: number, b: number) => a - b),
    );
  });

  it('prints a readable table with meanings by default', () => {
    const r = explain({ top: '2' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Most helpful rows: removing one and refitting would RAISE this test loss/);
    assert.match(r.stdout, /first-order estimate/);
    assert.match(r.stdout, /damping λ = 0\.01 \(model metadata/);
  });

  it('explains an unlabelled test row for its predicted class', () => {
    const unlabelled = file('unlabelled.csv', 'a,b,c,d\n0.1,0.2,0.3,0.4\n');
    const j = JSON.parse(explain({ test: unlabelled }, '--json').stdout);
    assert.equal(j.test.labelled, false);
    assert.equal(j.test.label, j.test.predicted);
  });
});

describe('data files as pandas and sklearn write them', () => {
  /** The training rows' features with other label columns: `name` holds what label(i) gives. */
  function relabel(name: string, label: (i: number) => string, extra = ''): string {
    const lines = csv(30, 1).trim().split('\n');
    return (
      [
        `${extra}${lines[0].replace(/label$/, name)}`,
        ...lines.slice(1).map((l, i) => `${extra ? `${i},` : ''}${l.replace(/[^,]*$/, label(i))}`),
      ].join('\n') + '\n'
    );
  }

  it('a `target` column is the label: a note on stderr, labelColumn in the JSON', () => {
    const t = file(
      'target.csv',
      relabel('target', (i) => String(i % C)),
    );
    const r = explain({ train: t }, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^note: target\.csv: the label column is "target" \(there is no "label" column\)/m);
    const j = JSON.parse(r.stdout);
    assert.equal(j.labelColumn, 'target');
    assert.ok(j.notes.some((n: string) => /"target"/.test(n)));
    assert.ok(Array.isArray(j.warnings));
    // The same rows as with `label`.
    const ref = JSON.parse(explain({}, '--json').stdout);
    assert.deepEqual(j.scores, ref.scores);
  });

  it('--ignore-columns leaves columns out of the features; a pandas index is skipped without it', () => {
    const ref = JSON.parse(explain({}, '--json').stdout);
    const noted = file(
      'noted.csv',
      csv(30, 1)
        .replace(/^a,b,/, 'a,note,b,')
        .replace(/\n(-?[\d.]+),/g, '\n$1,7,'),
    );
    const r = explain({ train: noted, 'ignore-columns': 'note' }, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).scores, ref.scores);
    assertUserError(explain({ train: noted }), 'FEATURE_COUNT_MISMATCH', /--ignore-columns/);
    assertUserError(explain({ 'ignore-columns': 'nope' }), 'FEATURE_COLUMN_MISSING', /"nope"/);
    const indexed = file(
      'indexed.csv',
      relabel('label', (i) => String(i % C), ','),
    );
    const p = explain({ train: indexed }, '--json');
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stderr, /note: indexed\.csv: the first column "" \(a pandas index\) is skipped/);
    assert.deepEqual(JSON.parse(p.stdout).scores, ref.scores);
    const audit = cli('audit', '--model', model, '--train', noted, '--ignore-columns', 'note', '--json');
    assert.equal(audit.code, 0, audit.stderr);
    assert.equal(JSON.parse(audit.stdout).labelColumn, 'label');
  });

  it('--classes in the wrong order: a warning naming the order that fits, on stderr and in the JSON', () => {
    const names = ['x', 'y', 'z'];
    // Labels that the model fits (its own predictions), with every class present.
    const labels: number[] = JSON.parse(explain({}, '--json').stdout).scores.map(
      (s: { predicted: number }) => s.predicted,
    );
    let row = 0;
    for (let c = 0; c < C; c++) if (!labels.includes(c)) labels[row++] = c;
    const named = file(
      'named.csv',
      relabel('label', (i) => names[labels[i]]),
    );
    const right = explain({ train: named, test: named }, '--json');
    assert.equal(right.code, 0, right.stderr);
    assert.match(right.stderr, /note: named\.csv: the labels are class names: mapped to class ids in sorted order/);
    assert.doesNotMatch(right.stderr, /warning:/);
    assert.deepEqual(JSON.parse(right.stdout).classes, names);
    const wrong = explain({ train: named, test: named, classes: 'z,x,y' }, '--json');
    assert.equal(wrong.code, 0, wrong.stderr);
    assert.match(
      wrong.stderr,
      /^warning: training accuracy under the --classes order is [\d.]+%, below 1\.5\/C = 50\.0%; another class order gives [\d.]+%: pass --classes x,y,z$/m,
    );
    const w = JSON.parse(wrong.stdout).warnings;
    assert.deepEqual(
      w.map((x: { code: string }) => x.code),
      ['CLASS_ORDER'],
    );
    assert.deepEqual(w[0].bestClasses, names);
    assert.ok(w[0].accuracy < 0.2 && w[0].bestAccuracy > 0.85, `${w[0].accuracy} → ${w[0].bestAccuracy}`);
    const text = explain({ train: named, test: named, classes: 'z,x,y' });
    assert.doesNotMatch(text.stdout, /Infinity|NaN/);
    const a = cli('audit', '--model', model, '--train', named, '--classes', 'z,x,y', '--json');
    assert.match(a.stderr, /^warning: training accuracy under the --classes order/m);
    assert.deepEqual(JSON.parse(a.stdout).warnings[0].bestClasses, names);
  });

  it('--help lists --ignore-columns', () => {
    assert.match(cli('--help').stdout, /--ignore-columns a,b/);
  });
});

describe('bad input gives a clear error and exit code 2', () => {
  it('a ragged CSV row', () => {
    const t = file('ragged.csv', 'a,b,c,d,label\n1,2,3,4,0\n1,2,3,0\n');
    assertUserError(explain({ train: t }), 'CSV_RAGGED_ROW', /ragged\.csv:3/);
  });
  it('a non-numeric feature', () => {
    const t = file('nonnum.csv', 'a,b,c,d,label\n1,2,3,4,0\n1,two,3,4,1\n');
    const line = assertUserError(explain({ train: t }), 'FEATURE_NOT_NUMERIC', /nonnum\.csv:3:3/);
    assert.match(line, /two/);
  });
  it('an unknown label column', () => {
    const line = assertUserError(explain({ 'label-column': 'target' }), 'LABEL_COLUMN_MISSING');
    assert.match(line, /target/);
  });
  it('a label out of range', () => {
    const t = file('range.csv', 'a,b,c,d,label\n1,2,3,4,0\n1,2,3,4,7\n');
    const line = assertUserError(explain({ train: t }), 'LABEL_OUT_OF_RANGE', /range\.csv:3/);
    assert.match(line, /7/);
  });
  it('NaN in the data', () => {
    const t = file('nan.csv', 'a,b,c,d,label\n1,2,3,4,0\n1,NaN,3,4,1\n');
    assertUserError(explain({ train: t }), 'FEATURE_NOT_FINITE', /nan\.csv:3/);
  });
  it('the wrong feature count', () => {
    const t = file('wide.csv', 'a,b,c,d,e,label\n1,2,3,4,5,0\n');
    const line = assertUserError(explain({ train: t, test: t }), 'FEATURE_COUNT_MISMATCH');
    assert.match(line, /takes 4 features/);
    assert.match(line, /has 5 feature columns/);
  });
  it('a model with no linear head', () => {
    const bytes = serialize(
      [mkNode('Relu', ['input'], ['output'])],
      [],
      [valueInfo('input', 1, ['batch', F])],
      [valueInfo('output', 1, ['batch', F])],
    );
    const line = assertUserError(explain({ model: file('relu.onnx', bytes) }), 'NO_LINEAR_HEAD', /relu\.onnx/);
    assert.match(line, /Relu/);
  });
  it('a missing file', () => {
    assertUserError(explain({ train: join(dir, 'missing.csv') }), 'FILE_NOT_FOUND', /missing\.csv/);
  });
  it('an empty training file', () => {
    assertUserError(explain({ train: file('empty.csv', '') }), 'EMPTY_FILE', /empty\.csv/);
  });
  it('a training file with only a header', () => {
    assertUserError(explain({ train: file('header.csv', 'a,b,c,d,label\n') }), 'NO_ROWS', /header\.csv/);
  });
  it('a test row past the end', () => {
    assertUserError(explain({ 'test-row': '99' }), 'ROW_OUT_OF_RANGE', /test\.csv/);
  });
  it('an unknown option', () => {
    assertUserError(explain({}, '--frobnicate'), 'BAD_OPTION');
  });
  it('a bad damping value', () => {
    assertUserError(explain({ damping: '-1' }), 'BAD_OPTION');
  });
});

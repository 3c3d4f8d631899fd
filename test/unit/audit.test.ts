/**
 * audit and clean on the noisy-label fixture (digits, 15% of training labels flipped), against
 * its flipped-row list and a Feldman–Zhang memorization estimate from 400 refits of the head on
 * random 70% subsets (scripts/fixtures/make_fixtures.py).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { before, describe, it } from 'node:test';
import { audit, type AuditResult } from '../../src/core/audit';
import { Engine } from '../../src/core/model/engine';
import { auc } from '../helpers/stats';

const root = resolve(__dirname, '../..');
const fx = (f: string) => join(root, 'test/fixtures/noisy', f);
const CLI = join(root, 'dist/cli.js');
const tmp = mkdtempSync(join(tmpdir(), 'il-audit-'));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args, '--no-cache'], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Positives found among the top `frac` of rows by score. */
function found(score: ArrayLike<number>, pos: boolean[], frac: number): number {
  const k = Math.round(frac * pos.length);
  return Array.from({ length: pos.length }, (_, i) => i)
    .sort((a, b) => score[b] - score[a] || a - b)
    .slice(0, k)
    .filter((i) => pos[i]).length;
}

describe('audit on the noisy-label fixture', () => {
  let r: AuditResult;
  let flipped: boolean[];
  let fzMem: boolean[];
  before(async () => {
    const engine = await Engine.open(fx('model.onnx'));
    try {
      r = await audit(
        {
          model: fx('model.onnx'),
          train: fx('train.csv'),
          heldOut: { path: fx('validation.csv'), source: 'validation' },
          damping: 'auto',
          tau: 0,
        },
        engine,
      );
    } finally {
      await engine.release();
    }
    const fl = JSON.parse(readFileSync(fx('flipped.json'), 'utf8'));
    flipped = Array.from({ length: r.rows.n }, () => false);
    for (const i of fl.rows) flipped[i] = true;
    fzMem = JSON.parse(readFileSync(fx('fz.json'), 'utf8')).mem.map((m: number) => m > 0.25);
  });

  it('suspicion finds flipped labels at least as well as training loss and self-influence', () => {
    const s = r.scores;
    const scores = { suspicion: s.suspicion, trainingLoss: r.rows.loss, selfInfluence: s.selfInfluence };
    const table: Record<string, { at10: number; at20: number; auc: number }> = {};
    for (const [k, v] of Object.entries(scores))
      table[k] = { at10: found(v, flipped, 0.1), at20: found(v, flipped, 0.2), auc: auc(v, flipped) };
    console.log(`flipped rows found (of ${flipped.filter(Boolean).length}) and ROC AUC:`, JSON.stringify(table));
    const best10 = Math.max(table.trainingLoss.at10, table.selfInfluence.at10);
    const best20 = Math.max(table.trainingLoss.at20, table.selfInfluence.at20);
    assert.ok(table.suspicion.at10 >= best10 - 1, `@10%: ${table.suspicion.at10} vs ${best10}`);
    assert.ok(table.suspicion.at20 >= best20 - 1, `@20%: ${table.suspicion.at20} vs ${best20}`);
    assert.ok(
      table.suspicion.at10 > best10 || table.suspicion.at20 > best20,
      'beats the better baseline at 10% or 20%',
    );
  });

  it('flags memorized rows that the Feldman–Zhang estimate confirms, and ranks them', () => {
    const flagged = Array.from(r.scores.memorized!.keys()).filter((i) => r.scores.memorized![i]);
    const confirmed = flagged.filter((i) => fzMem[i]).length;
    const precision = confirmed / flagged.length;
    const a = auc(r.scores.suspicion, fzMem);
    console.log(
      `memorized: ${flagged.length} flagged, precision ${precision.toFixed(3)} against FZ mem > 0.25 (${fzMem.filter(Boolean).length} rows); suspicion AUC ${a.toFixed(4)}`,
    );
    assert.ok(flagged.length >= 2);
    assert.ok(precision >= 0.8, `precision ${precision}`);
    assert.ok(a >= 0.9, `AUC ${a}`);
  });

  it('each memorized row is predicted as its label, flips without itself, and does not help held-out data', () => {
    const s = r.scores;
    for (let i = 0; i < r.rows.n; i++) {
      const rule = s.predicted[i] === r.rows.labels[i] && s.marginWithout[i] < 0 && s.heldOutInfluence![i] >= 0;
      assert.equal(s.memorized![i] === 1, rule, `row ${i}`);
    }
  });

  it('the JSON lists every row with reasons in file order', () => {
    const out = cli(
      'audit',
      '--model',
      fx('model.onnx'),
      '--train',
      fx('train.csv'),
      '--validation',
      fx('validation.csv'),
      '--json',
    );
    assert.equal(out.code, 0, out.stderr);
    const j = JSON.parse(out.stdout);
    assert.equal(j.version, 1);
    assert.equal(j.rows.length, 1000);
    assert.deepEqual(j.heldOut.source, 'validation');
    assert.equal(j.heldOut.rows, 400);
    assert.deepEqual(
      j.rows.slice(0, 3).map((x: { row: number; line: number }) => [x.row, x.line]),
      [
        [0, 2],
        [1, 3],
        [2, 4],
      ],
    );
    const mem = j.rows.filter((x: { memorized: boolean }) => x.memorized);
    assert.equal(mem.length, j.memorizedCount);
    for (const x of mem)
      assert.ok(
        x.reasons.some((q: { code: string }) => q.code === 'SELF_FLIP'),
        `row ${x.row} has a SELF_FLIP reason`,
      );
    const wrong = j.rows.find((x: { predicted: number; label: number }) => x.predicted !== x.label);
    assert.ok(
      wrong.reasons.some(
        (q: { code: string; predicted: number; p: number }) =>
          q.code === 'LABEL_DISAGREES' && q.predicted === wrong.predicted && q.p > 0,
      ),
    );
  });

  it('without a held-out set, held-out terms are null and nothing is flagged memorized', () => {
    const out = cli('audit', '--model', fx('model.onnx'), '--train', fx('train.csv'), '--json');
    const j = JSON.parse(out.stdout);
    assert.equal(j.heldOut, null);
    assert.equal(j.rows[0].heldOutInfluence, null);
    assert.equal(j.rows[0].memorized, null);
  });
});

describe('clean', () => {
  it('removing the memorized rows improves held-out accuracy, and the predicted loss change has the right sign', () => {
    const out = join(tmp, 'clean.csv');
    const r = cli(
      'clean',
      '--model',
      fx('model.onnx'),
      '--train',
      fx('train.csv'),
      '--validation',
      fx('validation.csv'),
      '--remove',
      'memorized',
      '--out',
      out,
      '--verify',
      '--json',
    );
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    const v = j.verified;
    console.log(
      `clean --remove memorized: ${j.removed.length} rows; held-out loss ${v.heldOutLossBefore.toFixed(5)} → ${v.heldOutLossAfter.toFixed(5)} (predicted change ${j.predicted.heldOutLossChange.toExponential(3)}), accuracy ${v.heldOutAccuracyBefore} → ${v.heldOutAccuracyAfter}`,
    );
    assert.ok(j.removed.length >= 2);
    assert.ok(v.heldOutAccuracyAfter > v.heldOutAccuracyBefore, 'accuracy improves');
    assert.equal(Math.sign(j.predicted.heldOutLossChange), Math.sign(v.heldOutLossAfter - v.heldOutLossBefore));
    assert.ok(v.gradNorm <= 1e-10);
    // Every other byte of the kept rows is unchanged.
    const orig = readFileSync(fx('train.csv'), 'utf8').split('\n');
    const kept = readFileSync(out, 'utf8').split('\n');
    const removed = new Set<number>(j.removed);
    assert.deepEqual(
      kept,
      orig.filter((_, k) => k === 0 || !removed.has(k - 1)),
    );
    assert.equal(j.kept, 1000 - j.removed.length);
  });

  it('top:K and rows: choose the rows to drop', () => {
    const out = join(tmp, 'top.csv');
    const top = JSON.parse(
      cli(
        'clean',
        '--model',
        fx('model.onnx'),
        '--train',
        fx('train.csv'),
        '--validation',
        fx('validation.csv'),
        '--remove',
        'top:5',
        '--out',
        out,
        '--json',
      ).stdout,
    );
    assert.equal(top.removed.length, 5);
    assert.equal(top.verified, null);
    const rows = JSON.parse(
      cli(
        'clean',
        '--model',
        fx('model.onnx'),
        '--train',
        fx('train.csv'),
        '--validation',
        fx('validation.csv'),
        '--remove',
        'rows:9,1,5',
        '--out',
        out,
        '--json',
      ).stdout,
    );
    assert.deepEqual(rows.removed, [1, 5, 9]);
  });

  const bad: [string, string[], string][] = [
    ['an empty validation file', ['--validation', 'EMPTY'], 'EMPTY_FILE'],
    ['a validation file with other columns', ['--validation', 'OTHER'], 'FEATURE_COUNT_MISMATCH'],
    ['--remove naming missing rows', ['--remove', 'rows:3,1000'], 'ROW_OUT_OF_RANGE'],
    ['an --out equal to the input', ['--out', fx('train.csv')], 'BAD_OPTION'],
    ['a malformed --remove', ['--remove', 'some'], 'BAD_OPTION'],
  ];
  for (const [what, over, code] of bad) {
    it(`${what} is a clear error with exit code 2`, () => {
      const empty = join(tmp, 'empty.csv');
      writeFileSync(empty, '');
      const other = join(tmp, 'other.csv');
      writeFileSync(other, 'a,b,label\n1,2,0\n');
      const args = new Map<string, string>([
        ['--model', fx('model.onnx')],
        ['--train', fx('train.csv')],
        ['--validation', fx('validation.csv')],
        ['--remove', 'top:3'],
        ['--out', join(tmp, 'x.csv')],
      ]);
      for (let k = 0; k < over.length; k += 2)
        args.set(over[k], over[k + 1] === 'EMPTY' ? empty : over[k + 1] === 'OTHER' ? other : over[k + 1]);
      const before = readFileSync(fx('train.csv'));
      const r = cli('clean', ...[...args].flat());
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr.trim(), new RegExp(`^error\\[${code}\\]`));
      assert.deepEqual(readFileSync(fx('train.csv')), before, 'the input is untouched');
    });
  }
});

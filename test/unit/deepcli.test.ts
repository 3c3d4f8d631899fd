/** The built CLI with --layers and --curvature (dist/cli.js): the JSON beyond the head, and the errors that exit 2. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { DEEP_DIR, decode, ldsReference, relError, softplusModelBytes } from '../helpers/deep';
import { buildModel, rng } from '../helpers/models';

const CLI = resolve(__dirname, '../../dist/cli.js');
const dir = mkdtempSync(join(tmpdir(), 'il-deepcli-'));

function file(name: string, content: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

function csv(n: number, F: number, C: number, seed: number): string {
  const r = rng(seed);
  const rows = [[...Array.from({ length: F }, (_, j) => `f${j}`), 'label'].join(',')];
  for (let i = 0; i < n; i++) rows.push(Array.from({ length: F }, () => r().toFixed(3)).join(',') + `,${i % C}`);
  return rows.join('\n') + '\n';
}

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, XDG_CACHE_HOME: join(dir, 'xdg') },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2, empty stdout, one `error[CODE] place: message` line on stderr, no stack trace. */
function assertUserError(r: ReturnType<typeof cli>, code: string): string {
  assert.equal(r.code, 2, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], new RegExp(`^error\\[${code}\\][ :]`));
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  return lines[0];
}

const softplus = file('softplus.onnx', softplusModelBytes());
const train4 = file('train4.csv', csv(40, 4, 2, 1));
const test4 = file('test4.csv', csv(3, 4, 2, 2));
const mlp = ldsReference('mlp', 'last2');

describe('explain --layers beyond the head', () => {
  it('--layers 2 --curvature exact: the exact-GGN scores of the reference, layers and headOnly in the JSON', () => {
    // testRows[0] of the reference is row 2 of test.csv.
    const r = cli(
      'explain',
      '--model',
      mlp.model,
      '--train',
      mlp.train,
      '--test',
      mlp.test,
      '--test-row',
      String(mlp.testRows[0]),
      '--layers',
      '2',
      '--curvature',
      'exact',
      '--damping',
      '0.001',
      '--no-stability',
      '--json',
    );
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.layers, [
      { name: '/head/Gemm', kind: 'Gemm', index: 1, parameters: 330 },
      { name: '/fc2/Gemm', kind: 'Gemm', index: 2, parameters: 2080 },
    ]);
    assert.equal(j.curvature, 'exact');
    assert.deepEqual(j.headOnly, ['lossChangeIfRemovedNewton', 'verified']);
    assert.equal(j.verified, null);
    assert.equal(j.selfInfluenceMethod, 'exact');
    assert.equal(j.damping, 0.001);
    assert.equal(j.scores.length, 1200);
    const lc = Float64Array.from(j.scores, (s: { lossChangeIfRemoved: number }) => s.lossChangeIfRemoved);
    const n = 1200;
    const e = relError(lc, decode(mlp.lossChangeIfRemoved['0.001']).subarray(0, n));
    assert.ok(e <= 1e-5, `lossChangeIfRemoved ${e.toExponential(2)}`);
    const self = Float64Array.from(j.scores, (s: { selfInfluence: number }) => s.selfInfluence);
    assert.ok(relError(self, decode(mlp.selfInfluence['0.001'])) <= 1e-5);
    for (const s of j.scores) {
      assert.equal(s.lossChangeIfRemovedNewton, null);
      assert.ok(Math.abs(s.lossChangeIfRemoved + s.influence / n) <= 1e-12 * Math.abs(s.influence) + 1e-300);
      assert.ok(Number.isFinite(s.classificationInfluence));
    }
    assert.ok(j.notes.some((x: string) => /headOnly/.test(x)));
    assert.ok(!j.warnings.some((w: { code: string }) => w.code === 'NON_FINITE'));
  });

  it('exact Gauss–Newton by default up to 5,000 parameters, EK-FAC beyond; the table says which layers and that the Newton column is head-only', () => {
    const r = cli(
      'explain',
      '--model',
      softplus,
      '--train',
      train4,
      '--test',
      test4,
      '--test-row',
      '0',
      '--layers',
      '2',
      '--top',
      '2',
      '--verify-top',
      '1',
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /layers: 1 'Gemm_z' \(Gemm, 8\), 2 'Gemm_a2' \(Gemm, 12\); 20 parameters; curvature exact Gauss–Newton/,
    );
    assert.match(r.stdout, /n\/a/);
    assert.doesNotMatch(r.stdout, /Verified by exact refits/);
    assert.match(r.stderr, /refits of --verify-top/);
    const j = JSON.parse(
      cli(
        'explain',
        '--model',
        softplus,
        '--train',
        train4,
        '--test',
        test4,
        '--test-row',
        '0',
        '--layers',
        'Gemm_a2',
        '--curvature',
        'ekfac',
        '--json',
      ).stdout,
    );
    assert.equal(j.curvature, 'ekfac');
    assert.equal(j.selfInfluenceMethod, 'ekfac');
    assert.deepEqual(
      j.layers.map((l: { index: number }) => l.index),
      [2],
    );
    assert.equal(j.stability.dampings.length, 3);
  });

  it('EK-FAC by default beyond 5,000 parameters', () => {
    const j = JSON.parse(
      cli(
        'explain',
        '--model',
        mlp.model,
        '--train',
        mlp.train,
        '--test',
        mlp.test,
        '--test-row',
        '0',
        '--layers',
        'all',
        '--no-stability',
        '--json',
      ).stdout,
    );
    assert.equal(j.curvature, 'ekfac');
    assert.equal(
      j.layers.reduce((a: number, l: { parameters: number }) => a + l.parameters, 0),
      6570,
    );
  });

  it('--curvature exact on the head alone: the exact path, the head as the one layer', () => {
    const model = file(
      'head.onnx',
      buildModel({
        F: 4,
        D: 5,
        C: 3,
        head: 'gemmTransB',
        trailing: 'softmax',
        metadata: { 'influence_lens.l2': '0.01' },
      }).bytes,
    );
    const tr = file('train3.csv', csv(30, 4, 3, 3));
    const te = file('test3.csv', csv(2, 4, 3, 4));
    const j = JSON.parse(
      cli('explain', '--model', model, '--train', tr, '--test', te, '--test-row', '0', '--curvature', 'exact', '--json')
        .stdout,
    );
    assert.equal(j.curvature, 'exact');
    assert.deepEqual(j.headOnly, []);
    assert.deepEqual(j.layers, [{ name: 'Gemm_z', kind: 'Gemm', index: 1, parameters: 18 }]);
    assert.equal(j.solver, 'cholesky');
    assert.equal(j.selfInfluenceMethod, 'exact');
    assert.ok(
      j.scores.every(
        (s: { lossChangeIfRemovedNewton: number | null }) => typeof s.lossChangeIfRemovedNewton === 'number',
      ),
    );
  });
});

describe('explain --layers errors exit 2', () => {
  it('an unsupported op on the path names the op and node and suggests shallower layers', () => {
    const line = assertUserError(
      cli('explain', '--model', softplus, '--train', train4, '--test', test4, '--test-row', '0', '--layers', 'all'),
      'UNSUPPORTED_OP',
    );
    assert.match(line, /\(node Softplus_s1\)/);
    assert.match(line, /'Softplus_s1' \(Softplus\)/);
    assert.match(line, /--layers 2/);
  });

  it('--layers naming no layer lists the layers', () => {
    const line = assertUserError(
      cli(
        'explain',
        '--model',
        softplus,
        '--train',
        train4,
        '--test',
        test4,
        '--test-row',
        '0',
        '--layers',
        'Gemm_a2,nope',
      ),
      'BAD_OPTION',
    );
    assert.match(
      line,
      /'nope' names no parameterized layer; the layers, from the output: 1 'Gemm_z' \(Gemm, 8 parameters\), 2 'Gemm_a2' \(Gemm, 12 parameters\), 3 'Gemm_a1' \(Gemm, 15 parameters\)/,
    );
    assertUserError(
      cli('explain', '--model', softplus, '--train', train4, '--test', test4, '--test-row', '0', '--layers', '4'),
      'BAD_OPTION',
    );
    assertUserError(
      cli('explain', '--model', softplus, '--train', train4, '--test', test4, '--test-row', '0', '--layers', '0'),
      'BAD_OPTION',
    );
  });

  it('--layers beyond the head on an image folder says it reads tables only, for now', () => {
    const digits = resolve(__dirname, '../../samples/digits');
    const line = assertUserError(
      cli(
        'explain',
        '--model',
        join(digits, 'model.onnx'),
        '--train',
        join(digits, 'images/train'),
        '--test',
        join(digits, 'images/test'),
        '--test-row',
        '0',
        '--layers',
        '2',
      ),
      'BAD_OPTION',
    );
    assert.match(line, /reads CSV\/TSV\/JSONL tables for now; .*images\/train is an image folder: use --layers head/);
  });

  it('a layer set too big for --curvature exact', () => {
    const line = assertUserError(
      cli(
        'explain',
        '--model',
        mlp.model,
        '--train',
        mlp.train,
        '--test',
        mlp.test,
        '--test-row',
        '0',
        '--layers',
        'all',
        '--curvature',
        'exact',
      ),
      'BAD_OPTION',
    );
    assert.match(line, /6570×6570 Gauss–Newton matrix/);
    assert.match(line, /limited to 5,000 parameters/);
  });

  it('--curvature ekfac on the head, --head refit beyond it, and --layers on audit', () => {
    assert.match(
      assertUserError(
        cli(
          'explain',
          '--model',
          softplus,
          '--train',
          train4,
          '--test',
          test4,
          '--test-row',
          '0',
          '--curvature',
          'ekfac',
        ),
        'BAD_OPTION',
      ),
      /beyond the head/,
    );
    assert.match(
      assertUserError(
        cli(
          'explain',
          '--model',
          softplus,
          '--train',
          train4,
          '--test',
          test4,
          '--test-row',
          '0',
          '--layers',
          '2',
          '--head',
          'refit',
        ),
        'BAD_OPTION',
      ),
      /--head refit/,
    );
    assertUserError(cli('audit', '--model', softplus, '--train', train4, '--layers', '2'), 'BAD_OPTION');
  });
});

describe('explain: is the head enough here?', () => {
  // scipy's Spearman and the top-10 overlaps of the float64 references (scripts/fixtures/deep.py --only agreement).
  const ref = JSON.parse(readFileSync(join(DEEP_DIR, 'agreement.json'), 'utf8'));
  const want = ref.models.mlp.rows[0];
  const args = [
    'explain',
    '--model',
    mlp.model,
    '--train',
    mlp.train,
    '--test',
    mlp.test,
    '--test-row',
    String(want.testRow),
    '--damping',
    String(ref.lambda),
    '--no-stability',
    '--top',
    '3',
  ];

  it('the table says the verdict with ρ and the overlaps; --json has them; --no-agreement leaves them out', () => {
    const r = cli(...args);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(
      r.stdout.includes(
        `is the head enough here? deeper layers change the answer (ρ = ${want.spearman.toFixed(2)}, top-10 overlap ${want.helpful.overlap}/10 helpful, ${want.harmful.overlap}/10 harmful); see them with --layers 2`,
      ),
      r.stdout,
    );
    assert.match(
      r.stdout,
      /by the head '\/head\/Gemm' and by the last 2 layers \('\/head\/Gemm', '\/fc2\/Gemm'; exact Gauss–Newton\) over all 1200 rows at λ = 0\.00100/,
    );
    const j = JSON.parse(cli(...args, '--json').stdout);
    assert.ok(Math.abs(j.agreement.spearman - want.spearman) < 1e-4, `${j.agreement.spearman}`);
    assert.deepEqual(j.agreement.helpful.deeper, want.helpful.deeper);
    assert.equal(j.agreement.faithful, false);
    assert.equal(j.model.layers, 3);
    const off = JSON.parse(cli(...args, '--json', '--no-agreement').stdout);
    assert.equal(off.agreement, null);
    assert.equal(off.seconds.agreement, undefined);
  });
});

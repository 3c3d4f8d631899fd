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

  it('--layers beyond the head reads an image folder like the head does (no longer a table-only error)', () => {
    const digits = resolve(__dirname, '../../samples/digits');
    const r = cli(
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
      '--top',
      '3',
      '--json',
    );
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.layers.length, 2);
    assert.equal(j.labelColumn, null);
    assert.match(j.test.file, /images\/test\/\d\/\d+\.png$/);
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

  it('--curvature ekfac on the head and --head refit beyond it', () => {
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
  });
});

describe('audit and clean --layers in the JSON', () => {
  const audits = JSON.parse(readFileSync(join(DEEP_DIR, 'audit_mlp_last2.json'), 'utf8')) as {
    suspicion: Record<string, unknown>;
    memorized: Record<string, number[]>;
  };
  const agree = JSON.parse(readFileSync(join(DEEP_DIR, 'audit_agreement.json'), 'utf8')).models.mlp.agreement;
  const held = mlp.train.replace(/train\.csv$/, 'validation.csv');
  const base = ['--model', mlp.model, '--train', mlp.train, '--validation', held, '--damping', '0.001', '--json'];

  it('audit --layers 2: layers, curvature, the head-only columns null, the reference suspicion and flags', () => {
    const r = cli('audit', ...base, '--layers', '2', '--no-stability');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(
      j.layers.map((l: { name: string; parameters: number }) => [l.name, l.parameters]),
      [
        ['/head/Gemm', 330],
        ['/fc2/Gemm', 2080],
      ],
    );
    assert.equal(j.curvature, 'exact');
    assert.deepEqual(j.headOnly, ['lossWithout', 'marginWithout']);
    assert.equal(j.agreement, null);
    type Row = { row: number; lossWithout: null; marginWithout: null; suspicion: number; memorized: boolean };
    const rows = j.rows as Row[];
    assert.ok(rows.every((x) => x.lossWithout === null && x.marginWithout === null));
    const e = relError(
      rows.map((x) => x.suspicion),
      decode(audits.suspicion['0.001']),
    );
    assert.ok(e <= 1e-5, `suspicion ${e.toExponential(2)}`);
    assert.deepEqual(
      rows.filter((x) => x.memorized).map((x) => x.row),
      audits.memorized['0.001'],
    );
  });

  it('audit (head): the agreement with the last 2 layers; --no-agreement: none', () => {
    const j = JSON.parse(cli('audit', ...base, '--no-stability').stdout);
    assert.deepEqual(j.headOnly, []);
    assert.equal(j.curvature, null);
    assert.ok(Math.abs(j.agreement.suspicion.spearman - agree.spearman) <= 1e-6);
    assert.equal(j.agreement.suspicion.topOverlap, agree.topOverlap);
    assert.deepEqual(j.agreement.memorized, agree.memorized);
    assert.equal(JSON.parse(cli('audit', ...base, '--no-stability', '--no-agreement').stdout).agreement, null);
  });

  it('audit --curvature exact with the head forces the explicit Hessian and exact self-influence, as explain does', () => {
    const args = [...base, '--no-stability', '--no-agreement', '--solver', 'cg', '--self-influence', 'ekfac'];
    const asked = JSON.parse(cli('audit', ...args).stdout);
    assert.deepEqual([asked.solver, asked.selfInfluenceMethod], ['cg', 'ekfac']);
    const exact = JSON.parse(cli('audit', ...args, '--curvature', 'exact').stdout);
    assert.deepEqual([exact.solver, exact.selfInfluenceMethod], ['cholesky', 'exact']);
  });

  it('clean --layers 2 --verify: the reference memorized rows removed; the refit head-only, verified null', () => {
    const out = join(dir, 'clean-deep.csv');
    const r = cli('clean', ...base, '--layers', '2', '--remove', 'memorized', '--out', out, '--verify');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.removed, audits.memorized['0.001']);
    assert.equal(j.verified, null);
    assert.deepEqual(j.headOnly, ['verified']);
    assert.equal(j.curvature, 'exact');
    assert.equal(readFileSync(out, 'utf8').trim().split('\n').length, 1 + 1200 - j.removed.length);
  });
});

describe('audit and clean --layers errors exit 2', () => {
  const held4 = file('held4.csv', csv(12, 4, 2, 3));
  it('an unsupported op on the path, a --layers naming no layer, a layer set too big for --curvature exact', () => {
    const line = assertUserError(
      cli('audit', '--model', softplus, '--train', train4, '--validation', held4, '--layers', 'all'),
      'UNSUPPORTED_OP',
    );
    assert.match(line, /\(node Softplus_s1\)/);
    assert.match(line, /--layers 2/);
    assert.match(
      assertUserError(
        cli('audit', '--model', softplus, '--train', train4, '--validation', held4, '--layers', 'Gemm_a2,nope'),
        'BAD_OPTION',
      ),
      /'nope' names no parameterized layer; the layers, from the output: 1 'Gemm_z'/,
    );
    assert.match(
      assertUserError(
        cli('audit', '--model', mlp.model, '--train', mlp.train, '--layers', 'all', '--curvature', 'exact'),
        'BAD_OPTION',
      ),
      /6570×6570 Gauss–Newton matrix.*limited to 5,000 parameters/,
    );
    const out = join(dir, 'cleaned.csv');
    assert.match(
      assertUserError(
        cli(
          'clean',
          '--model',
          softplus,
          '--train',
          train4,
          '--validation',
          held4,
          '--out',
          out,
          '--remove',
          'memorized',
          '--layers',
          'all',
        ),
        'UNSUPPORTED_OP',
      ),
      /\(node Softplus_s1\)/,
    );
    assertUserError(cli('audit', '--model', softplus, '--train', train4, '--curvature', 'ekfac'), 'BAD_OPTION');
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

/**
 * `npm run bench`: speed goals as ratios against a floor measured in the same run.
 *
 * Generates (once, under .bench/) a synthetic 200,000 × 128 CSV with 20 classes labelled by the
 * bench MLP (128→256→128→20, bench/mlp_128_256_128_20.onnx) with 10% of labels flipped, then times,
 * each in a fresh process: the floor (CSV parse + a bare onnxruntime forward pass), a cold
 * `explain` (empty cache), a warm `explain` of another test row (cache hit), `audit`, a warm
 * `explain --verify-top 5` (ten actual refits), all of the head alone (--no-agreement), then a cold
 * `explain --layers 2` and two default explains (warm head + the comparison with the last 2 layers:
 * the first gathers the rows' loss-gradient factors, the second finds them cached).
 * Options: --rows N (default 200000), --keep (keep the cache between runs), --no-stability (passed on:
 * times the scores without the stability check's two extra dampings).
 * Then the image case (images.ts): --image-rows N (default 50000); --only tables|images runs one case.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as ort from 'onnxruntime-node';
import { normal, uniform } from '../../test/helpers/random';
import { imageBench } from './images';

const root = resolve(__dirname, '../..');
const args = process.argv.slice(2);
const rows = Number(args[args.indexOf('--rows') + 1] ?? 0) || 200_000;
const F = 128;
const C = 20;
const model = join(root, 'bench/mlp_128_256_128_20.onnx');
const dir = join(root, '.bench');
const train = join(dir, `train-${rows}.csv`);
const test = join(dir, 'test.csv');
const cacheDir = join(dir, 'cache');

async function generate(path: string, n: number, seed: number): Promise<void> {
  if (existsSync(path)) return;
  const session = await ort.InferenceSession.create(model);
  const g = normal(uniform(seed));
  const flip = normal(uniform(seed + 1));
  // Class-dependent means make the task learnable-looking; labels come from the model itself.
  const centers = Array.from({ length: C }, () => Float32Array.from({ length: F }, () => g() * 0.8));
  const tmp = `${path}.tmp`;
  const out = createWriteStream(tmp);
  const write = (s: string) => new Promise<void>((res) => (out.write(s) ? res() : out.once('drain', res)));
  await write([...Array.from({ length: F }, (_, j) => `f${j}`), 'label'].join(',') + '\n');
  const B = 4096;
  for (let start = 0; start < n; start += B) {
    const k = Math.min(B, n - start);
    const x = new Float32Array(k * F);
    for (let i = 0; i < k; i++) {
      const c = centers[((Math.floor((g() + 4) * 1e6) % C) + C) % C]; // g() < −4 happens at 200k rows
      for (let j = 0; j < F; j++) x[i * F + j] = c[j] + g();
    }
    const res = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [k, F]) });
    const z = res[session.outputNames[0]].data as Float32Array;
    const lines: string[] = [];
    for (let i = 0; i < k; i++) {
      let y = 0;
      for (let c = 1; c < C; c++) if (z[i * C + c] > z[i * C + y]) y = c;
      if (Math.abs(flip()) > 1.645) y = (y + 1 + Math.floor(Math.abs(flip()) * 1e6) % (C - 1)) % C; // ~10% flipped
      const vals: string[] = new Array(F);
      for (let j = 0; j < F; j++) vals[j] = x[i * F + j].toFixed(5);
      lines.push(vals.join(',') + ',' + y);
    }
    await write(lines.join('\n') + '\n');
  }
  await new Promise<void>((res) => out.end(res));
  renameSync(tmp, path);
  await session.release();
}

interface Timed {
  seconds: number;
  maxRssMB: number;
  stdout: string;
}

/** Runs a command in a fresh Node process and returns its wall time and peak RSS. */
function timed(script: string, scriptArgs: string[]): Timed {
  const rssFile = join(dir, `rss-${process.pid}.txt`);
  rmSync(rssFile, { force: true });
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--require', join(__dirname, 'rss.cjs'), script, ...scriptArgs], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
    env: { ...process.env, INFLUENCE_LENS_RSS_FILE: rssFile },
  });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${script} ${scriptArgs.join(' ')} failed (${r.status}):\n${r.stderr}`);
  const maxRssMB = existsSync(rssFile) ? Number(readFileSync(rssFile, 'utf8')) / 1024 : NaN;
  rmSync(rssFile, { force: true });
  return { seconds, maxRssMB, stdout: r.stdout };
}

async function main(): Promise<void> {
  const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : null;
  if (only !== 'images') await tables();
  if (only !== 'tables') {
    const n = Number(args[args.indexOf('--image-rows') + 1] ?? 0) || 50_000;
    if (only !== 'images') console.log('');
    await imageBench(root, dir, n, timed);
  }
}

async function tables(): Promise<void> {
  if (!existsSync(model)) throw new Error(`missing ${model}: run the fixture script (scripts/fixtures/make_fixtures.py --only bench)`);
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  await generate(train, rows, 1);
  await generate(test, 100, 2);
  console.log(`data: ${rows} rows × ${F} features, ${C} classes, ${(statSync(train).size / 1e6).toFixed(0)} MB (ready in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const cli = join(root, 'dist/cli.js');
  const floorScript = join(root, 'dist/bench-floor.js');
  rmSync(cacheDir, { recursive: true, force: true });
  const common = ['--model', model, '--train', train, '--cache-dir', cacheDir, '--json', '--top', '10', ...(args.includes('--no-stability') ? ['--no-stability'] : [])];

  // The head's explains without the head-vs-last-2 comparison (timed on its own below), so that their ratios stay those of the head alone.
  const explain = ['explain', ...common, '--no-agreement'];

  const floor = timed(floorScript, [model, train]);
  const cold = timed(cli, [...explain, '--test', test, '--test-row', '0']);
  const warm = timed(cli, [...explain, '--test', test, '--test-row', '1']);
  const aud = timed(cli, ['audit', ...common.filter((a) => a !== '--top' && a !== '10'), '--test', test]);
  // Actual refits of the 5 most helpful and 5 most harmful rows, on the fast path's curvature and ORT gradients.
  const verify = timed(cli, [...explain.filter((a) => a !== '--top' && a !== '10'), '--top', '5', '--verify-top', '5', '--test', test, '--test-row', '2']);
  // Beyond the head: the last 2 layers (head + the 256→128 layer, EK-FAC per layer), never cached; and the default
  // explain, which adds that comparison to a (warm) head explain.
  const last2 = timed(cli, [...explain, '--layers', '2', '--test', test, '--test-row', '0']);
  const agreed = timed(cli, ['explain', ...common, '--test', test, '--test-row', '3']);
  // Again for another row: the rows' loss-gradient factors the first one gathered are now cached.
  const agreedWarm = timed(cli, ['explain', ...common, '--test', test, '--test-row', '4']);
  const last2Json = JSON.parse(last2.stdout);
  const agreedJson = JSON.parse(agreed.stdout);
  const agreedWarmJson = JSON.parse(agreedWarm.stdout);
  const verifyJson = JSON.parse(verify.stdout);
  const coldJson = JSON.parse(cold.stdout);
  const warmJson = JSON.parse(warm.stdout);
  if (!args.includes('--keep')) rmSync(cacheDir, { recursive: true, force: true });

  const line = (name: string, t: Timed, extra = '') => console.log(`${name.padEnd(34)} ${t.seconds.toFixed(2).padStart(7)} s   peak RSS ${t.maxRssMB.toFixed(0).padStart(5)} MB${extra}`);
  console.log(`solver ${coldJson.solver}${coldJson.cgIterations ? ` (${coldJson.cgIterations} CG iterations)` : ''}, self-influence ${coldJson.selfInfluenceMethod}, P = ${coldJson.model.parameters}`);
  line('floor (CSV parse + bare ORT pass)', floor);
  line('cold explain', cold, `   stages ${JSON.stringify(roundAll(coldJson.seconds))}`);
  line('warm explain (cache hit)', warm, `   cache ${warmJson.train.cache}; stages ${JSON.stringify(roundAll(warmJson.seconds))}`);
  line('audit', aud);
  line('warm explain --verify-top 5 (10 refits)', verify, `   verify ${verifyJson.seconds.verify?.toFixed(2)} s, ‖∇J‖ ≤ ${verifyJson.verified?.gradNorm.toExponential(1)}`);
  const P2 = last2Json.layers.reduce((a: number, l: { parameters: number }) => a + l.parameters, 0);
  line('cold explain --layers 2', last2, `   ${last2Json.curvature}, P = ${P2}; stages ${JSON.stringify(roundAll(last2Json.seconds))}`);
  line('warm explain + agreement (default)', agreed, `   ρ ${agreedJson.agreement?.spearman.toFixed(3)}; agreement ${agreedJson.seconds.agreement?.toFixed(2)} s (gathers the rows' factors if they fit)`);
  line('  the same, another row', agreedWarm, `   ρ ${agreedWarmJson.agreement?.spearman.toFixed(3)}; agreement ${agreedWarmJson.seconds.agreement?.toFixed(2)} s (factors cached if they fit 512 MB)`);
  console.log('');
  console.log(`cold explain / floor        ${(cold.seconds / floor.seconds).toFixed(2)}×   (goal ≤ 1.5×)`);
  console.log(`warm explain / cold explain ${(warm.seconds / cold.seconds).toFixed(2)}×   (goal ≤ 0.15×)`);
  console.log(`audit / cold explain        ${(aud.seconds / cold.seconds).toFixed(2)}×   (goal ≤ 2×)`);
  console.log(`last-2 cold / cold explain  ${(last2.seconds / cold.seconds).toFixed(2)}×   (goal ≤ 2×)`);
  console.log(`cold explain vs the 43 s PyTorch CG baseline quoted in the issue: ${(cold.seconds / 43).toFixed(3)}× (goal < 0.1×)`);
  console.log(`peak RSS: ${Math.max(cold.maxRssMB, warm.maxRssMB, aud.maxRssMB, last2.maxRssMB, agreed.maxRssMB, agreedWarm.maxRssMB).toFixed(0)} MB (goal ≤ 1,536 MB at 1,000,000 rows)`);
}

function roundAll(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v * 100) / 100]));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});

/**
 * The image case of `npm run bench`: N generated 32×32 RGB PNGs (default 50,000) in an image folder,
 * labelled by the bench CNN (bench/cnn_32x32.onnx) with 10% flipped. Times, each in a fresh
 * process, the floor (listing, decoding with the same threads, a bare onnxruntime pass) and a cold
 * explain (empty cache), and prints their ratio and the peak RSS of each.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { PNG } from 'pngjs';
import { uniform } from '../../test/helpers/random';

const SIZE = 32;

/** One image: a class-coloured gradient with a blob and mild noise (compresses like a small photo). */
function image(u: () => number, k: number): Uint8Array {
  const rgba = new Uint8Array(SIZE * SIZE * 4);
  const base = [(k * 53) % 200, (k * 97) % 200, (k * 151) % 200];
  const cx = u() * SIZE;
  const cy = u() * SIZE;
  const r = 4 + u() * 8;
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const inBlob = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      for (let c = 0; c < 3; c++) {
        const v = base[c] + (c === 0 ? x : c === 1 ? y : x + y) + (inBlob ? 60 : 0) + Math.floor(u() * 8);
        rgba[(y * SIZE + x) * 4 + c] = Math.min(255, v);
      }
      rgba[(y * SIZE + x) * 4 + 3] = 255;
    }
  }
  return rgba;
}

/** Writes `n` images under dir/<label>/ (labels from the model, 10% flipped), once. */
export async function generateImages(model: string, dir: string, n: number, seed: number): Promise<void> {
  if (existsSync(join(dir, '.done'))) return;
  rmSync(dir, { recursive: true, force: true });
  const session = await ort.InferenceSession.create(model);
  const u = uniform(seed);
  const B = 1024;
  const F = 3 * SIZE * SIZE;
  for (let c = 0; c < 10; c++) mkdirSync(join(dir, String(c)), { recursive: true });
  for (let start = 0; start < n; start += B) {
    const k = Math.min(B, n - start);
    const imgs: Uint8Array[] = [];
    const x = new Float32Array(k * F);
    for (let i = 0; i < k; i++) {
      const rgba = image(u, Math.floor(u() * 10));
      imgs.push(rgba);
      for (let p = 0; p < SIZE * SIZE; p++) for (let c = 0; c < 3; c++) x[i * F + c * SIZE * SIZE + p] = rgba[p * 4 + c] / 255;
    }
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [k, 3, SIZE, SIZE]) });
    const z = out[session.outputNames[0]].data as Float32Array;
    for (let i = 0; i < k; i++) {
      let y = 0;
      for (let c = 1; c < 10; c++) if (z[i * 10 + c] > z[i * 10 + y]) y = c;
      if (u() < 0.1) y = (y + 1 + Math.floor(u() * 9)) % 10;
      const png = new PNG({ width: SIZE, height: SIZE });
      png.data = Buffer.from(imgs[i]);
      writeFileSync(join(dir, String(y), `${String(start + i).padStart(6, '0')}.png`), PNG.sync.write(png, { colorType: 2 }));
    }
  }
  await session.release();
  writeFileSync(join(dir, '.done'), '');
}

export interface Timed {
  seconds: number;
  maxRssMB: number;
  stdout: string;
}

/** The image case; `timed` runs a script in a fresh process. */
export async function imageBench(root: string, benchDir: string, n: number, timed: (script: string, args: string[]) => Timed): Promise<void> {
  const model = join(root, 'bench/cnn_32x32.onnx');
  if (!existsSync(model)) throw new Error(`missing ${model}: run the fixture script (scripts/fixtures/make_fixtures.py --only images)`);
  const train = join(benchDir, `images-${n}`);
  const test = join(benchDir, 'images-test');
  const t0 = performance.now();
  await generateImages(model, train, n, 11);
  await generateImages(model, test, 100, 12);
  console.log(`images: ${n.toLocaleString('en-US')} PNGs of 32×32 RGB in 10 class folders (ready in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  const cacheDir = join(benchDir, 'cache-images');
  rmSync(cacheDir, { recursive: true, force: true });
  const floor = timed(join(root, 'dist/bench-floor-images.js'), [model, train]);
  const cold = timed(join(root, 'dist/cli.js'), ['explain', '--model', model, '--train', train, '--test', test, '--test-row', '0', '--cache-dir', cacheDir, '--json', '--top', '10']);
  const warm = timed(join(root, 'dist/cli.js'), ['explain', '--model', model, '--train', train, '--test', test, '--test-row', '1', '--cache-dir', cacheDir, '--json', '--top', '10']);
  rmSync(cacheDir, { recursive: true, force: true });
  // The damping-stability check scores every row twice more (at λ/10 and 10λ): the same cold run without it.
  const bare = timed(join(root, 'dist/cli.js'), ['explain', '--model', model, '--train', train, '--test', test, '--test-row', '0', '--cache-dir', cacheDir, '--json', '--top', '10', '--no-stability']);
  rmSync(cacheDir, { recursive: true, force: true });
  const coldJson = JSON.parse(cold.stdout);
  const warmJson = JSON.parse(warm.stdout);
  const round = (o: Record<string, number>) => JSON.stringify(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v * 100) / 100])));
  const line = (name: string, t: Timed, extra = '') => console.log(`${name.padEnd(44)} ${t.seconds.toFixed(2).padStart(7)} s   peak RSS ${t.maxRssMB.toFixed(0).padStart(5)} MB${extra}`);
  console.log(`solver ${coldJson.solver}, self-influence ${coldJson.selfInfluenceMethod}, P = ${coldJson.model.parameters}; ${coldJson.train.rows} rows read ${coldJson.train.read}`);
  line('floor (list + decode + bare ORT pass)', floor);
  line('cold explain', cold, `   stages ${round(coldJson.seconds)}`);
  line('warm explain (cache hit, files stat-ed)', warm, `   cache ${warmJson.train.cache}; stages ${round(warmJson.seconds)}`);
  line('cold explain --no-stability', bare, `   stages ${round(JSON.parse(bare.stdout).seconds)}`);
  console.log('');
  console.log(`images: cold explain / floor ${(cold.seconds / floor.seconds).toFixed(2)}×   (goal ≤ 1.5×); without the stability check ${(bare.seconds / floor.seconds).toFixed(2)}×`);
  console.log(`images: peak RSS ${Math.max(cold.maxRssMB, warm.maxRssMB).toFixed(0)} MB (floor ${floor.maxRssMB.toFixed(0)} MB)`);
}

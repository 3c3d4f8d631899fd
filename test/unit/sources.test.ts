/**
 * Image folders, manifests, Parquet and Arrow against the text tables they stand for: the same
 * pixels give the same influence; an RGB image folder matches its float64 reference; the noisy
 * fixture gives the same audit from Parquet and Arrow as from its CSV; a changed image is the only
 * one decoded again; bad inputs exit 2 naming the file.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { PNG } from 'pngjs';
import { audit } from '../../src/core/audit';
import { RowsCache } from '../../src/core/cache/store';
import { imagePool } from '../../src/core/data/images/pool';
import { explain } from '../../src/core/explain';
import type { ExplainResult } from '../../src/core/explainShapes';
import { Engine } from '../../src/core/model/engine';
import { readSourceRows } from '../../src/core/sources';
import { rowDetail, rowFiles } from '../../src/core/data/rowfiles';
import { relErr } from '../helpers/stats';

const root = resolve(__dirname, '../..');
const at = (p: string) => resolve(root, p);
const tmp = mkdtempSync(join(tmpdir(), 'il-src-'));
const DIGITS_STD = { std: [15 / 255] };

/** The CSV row an image of the digits sample comes from: its file name. */
const csvRow = (file: string) => Number(basename(file, '.png'));

function permuted(
  r: ExplainResult,
  name: 'influence' | 'lossChangeIfRemoved' | 'classificationInfluence',
): Float64Array {
  const out = new Float64Array(r.rows.line.length);
  const loc = r.rows.locator!;
  for (let i = 0; i < out.length; i++) out[csvRow(loc.files[loc.file[i]])] = r.scores[name][i];
  return out;
}

describe('same pixels, same answer: the digits sample as images and as its CSV', () => {
  for (const model of ['samples/digits/model.onnx', 'test/fixtures/digits/cnn_logsoftmax.onnx']) {
    it(`${model}: image folder, manifest and Hugging Face Parquet give the CSV's influence within 1e-6`, async () => {
      const eng = await Engine.open(at(model));
      try {
        // samples/digits/preprocess.json sets std 15/255 beside model.onnx; the CNN takes it from the request (settings or flags).
        const images = { preprocess: DIGITS_STD };
        for (const t of [3, 17]) {
          const csv = await explain(
            {
              model: at(model),
              train: at('samples/digits/train.csv'),
              test: at('samples/digits/test.csv'),
              testRow: t,
              stability: false,
            },
            eng,
          );
          const variants = [
            { train: 'samples/digits/images/train', test: 'samples/digits/images/test.csv', folder: true },
            { train: 'samples/digits/images/train.csv', test: 'samples/digits/images/test.csv', folder: false },
            { train: 'samples/digits/images/train.parquet', test: 'samples/digits/images/test.parquet', folder: false },
          ];
          for (const v of variants) {
            const r = await explain(
              { model: at(model), train: at(v.train), test: at(v.test), testRow: t, images, stability: false },
              eng,
            );
            assert.equal(r.test.predicted, csv.test.predicted);
            assert.ok(
              Math.abs(r.test.loss - csv.test.loss) <= 1e-9 * Math.max(1, csv.test.loss),
              `${v.train}: test loss`,
            );
            for (const name of ['influence', 'lossChangeIfRemoved', 'classificationInfluence'] as const) {
              const got = v.folder ? permuted(r, name) : r.scores[name];
              const e = relErr(got, csv.scores[name]);
              assert.ok(e <= 1e-6, `${v.train}, test row ${t}: ${name} relative error ${e.toExponential(2)}`);
            }
            assert.equal(r.damping, csv.damping);
          }
        }
      } finally {
        await eng.release();
      }
    });
  }
});

describe('an RGB image folder with mean/std normalization against its float64 reference', () => {
  interface RgbTest {
    row: number;
    label: number;
    predicted: number;
    runnerUp: number;
    probabilities: number[];
    loss: number;
    influence: number[];
    lossChangeIfRemoved: number[];
    lossChangeIfRemovedNewton: number[];
    classificationInfluence: number[];
  }
  const ref: {
    l2: number;
    classes: string[];
    trainFiles: string[];
    trainLabels: number[];
    selfInfluence: number[];
    trainLoss: number[];
    tests: RgbTest[];
  } = JSON.parse(readFileSync(at('test/fixtures/images/rgb/reference.json'), 'utf8'));
  it("explain matches numpy on torchvision's tensors to 1e-5 (the preprocessing from the model metadata)", async () => {
    const model = at('test/fixtures/images/rgb/model.onnx');
    const eng = await Engine.open(model);
    try {
      for (const t of ref.tests) {
        const r = await explain(
          {
            model,
            train: at('test/fixtures/images/rgb/train'),
            test: at('test/fixtures/images/rgb/test'),
            testRow: t.row,
            stability: false,
          },
          eng,
        );
        assert.deepEqual(r.classes, ref.classes);
        assert.equal(r.damping, ref.l2);
        const loc = r.rows.locator!;
        assert.deepEqual(
          Array.from(loc.file, (f) => relative(at('test/fixtures/images/rgb'), loc.files[f])),
          ref.trainFiles,
        );
        assert.deepEqual(Array.from(r.rows.label), ref.trainLabels);
        assert.equal(r.test.label, t.label);
        assert.equal(r.test.predicted, t.predicted);
        assert.equal(r.scores.runnerUp, t.runnerUp);
        assert.ok(relErr(r.test.probabilities, t.probabilities) < 1e-5);
        assert.ok(Math.abs(r.test.loss - t.loss) <= 1e-5 * Math.max(t.loss, 1e-3));
        const checks: [string, ArrayLike<number>, ArrayLike<number>][] = [
          ['influence', r.scores.influence, t.influence],
          ['lossChangeIfRemoved', r.scores.lossChangeIfRemoved, t.lossChangeIfRemoved],
          ['lossChangeIfRemovedNewton', r.scores.lossChangeIfRemovedNewton, t.lossChangeIfRemovedNewton],
          ['classificationInfluence', r.scores.classificationInfluence, t.classificationInfluence],
          ['selfInfluence', r.scores.selfInfluence, ref.selfInfluence],
          ['train loss', r.rows.loss, ref.trainLoss],
        ];
        for (const [name, got, want] of checks) {
          const e = relErr(got, want);
          assert.ok(e < 1e-5, `test row ${t.row}: ${name} relative error ${e.toExponential(2)}`);
        }
        assert.ok(r.preprocess && r.preprocess.from.resize === 'model metadata');
      }
    } finally {
      await eng.release();
    }
  });
});

describe("Parquet and Arrow tables: the noisy fixture gives its CSV's audit", () => {
  it('numeric columns, one list column, Parquet and Arrow (Feather v2)', async () => {
    const model = at('test/fixtures/noisy/model.onnx');
    const eng = await Engine.open(model);
    try {
      const run = async (train: string, validation: string) =>
        audit(
          {
            model,
            train: at(`test/fixtures/noisy/${train}`),
            heldOut: { path: at(`test/fixtures/noisy/${validation}`), source: 'validation' },
            damping: 'auto',
            tau: 0,
            stability: false,
          },
          eng,
        );
      const csv = await run('train.csv', 'validation.csv');
      for (const [train, validation] of [
        ['train.parquet', 'validation.parquet'],
        ['train.arrow', 'validation.arrow'],
        ['train_list.parquet', 'validation.csv'],
        ['train_list.arrow', 'validation.parquet'],
      ]) {
        const a = await run(train, validation);
        assert.equal(a.rows.n, csv.rows.n);
        assert.deepEqual(Array.from(a.rows.labels), Array.from(csv.rows.labels));
        assert.deepEqual(
          Array.from(a.scores.memorized!),
          Array.from(csv.scores.memorized!),
          `${train}: memorized rows`,
        );
        for (const name of ['suspicion', 'selfInfluence', 'heldOutInfluence', 'lossWithout'] as const) {
          assert.ok(relErr(a.scores[name]!, csv.scores[name]!) < 1e-9, `${train}: ${name}`);
        }
        assert.equal(a.heldOutAccuracy, csv.heldOutAccuracy);
        const loc = a.rows.locator!;
        assert.equal(loc.kind, 'shards');
        assert.deepEqual(Array.from(loc.fileRow!.subarray(0, 3)), [0, 1, 2]);
      }
    } finally {
      await eng.release();
    }
  });
});

describe('cache per image file', () => {
  it('re-reading a folder after one image changed decodes only that image', async () => {
    const dir = join(tmp, 'inc');
    for (const label of ['0', '1', '2']) {
      mkdirSync(join(dir, label), { recursive: true });
      const src = at(`samples/digits/images/train/${label}`);
      for (const f of ['', '']) void f;
      const names = readdirSync(src).slice(0, 12) as string[];
      for (const n of names) copyFileSync(join(src, n), join(dir, label, n));
    }
    const eng = await Engine.open(at('samples/digits/model.onnx'));
    const cache = new RowsCache(join(tmp, 'cache'));
    try {
      const read = async () => {
        const before = imagePool().decoded;
        const r = await readSourceRows(eng, dir, {}, {}, { cache });
        if (r.changed) await cache.store(r.key, r);
        return { r, decoded: imagePool().decoded - before };
      };
      const first = await read();
      assert.equal(first.r.n, 36);
      assert.equal(first.decoded, 36);
      assert.equal(first.r.read, 36);
      const again = await read();
      assert.equal(again.decoded, 0);
      assert.equal(again.r.reused, 36);
      assert.deepEqual(again.r.z, first.r.z);
      // Change one image's pixels.
      const one = join(dir, '1', readdirSync(join(dir, '1'))[4]);
      const png = PNG.sync.read(readFileSync(one));
      png.data[0] = 255 - png.data[0];
      writeFileSync(one, PNG.sync.write(png, { colorType: 0 }));
      const changed = await read();
      assert.equal(changed.decoded, 1);
      assert.equal(changed.r.read, 1);
      assert.equal(changed.r.reused, 35);
      // Only the mtime changed (to whole seconds, which utimes keeps exactly): the stamp differs, so it is read again.
      utimesSync(one, 1_700_000_000, 1_700_000_000);
      assert.equal((await read()).decoded, 1);
      // The same bytes in a new inode with the same mtime: the content hash decides, nothing is decoded.
      const copy = `${one}.tmp`;
      copyFileSync(one, copy);
      utimesSync(copy, 1_700_000_000, 1_700_000_000);
      assert.notEqual(statSync(copy).ino, statSync(one).ino);
      renameSync(copy, one);
      const same = await read();
      assert.equal(same.decoded, 0);
      assert.deepEqual(same.r.z, changed.r.z);
      // A new image is decoded; the others are not.
      const extra = (readdirSync(at('samples/digits/images/train/2')) as string[])[20];
      copyFileSync(at(`samples/digits/images/train/2/${extra}`), join(dir, '2', 'zz-new.png'));
      const added = await read();
      assert.equal(added.decoded, 1);
      assert.equal(added.r.n, 37);
    } finally {
      await eng.release();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The command line on bad input: exit 2 and one error line naming the file.

const CLI = at('dist/cli.js');
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, XDG_CACHE_HOME: join(tmp, 'xdg') },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const MODEL = at('samples/digits/model.onnx');

/** A small image folder of the digits sample (3 images of classes 0 and 1) to spoil. */
function folder(name: string): string {
  const dir = join(tmp, name);
  for (const label of ['0', '1']) {
    mkdirSync(join(dir, label), { recursive: true });
    const src = at(`samples/digits/images/train/${label}`);
    for (const n of (readdirSync(src) as string[]).slice(0, 3)) copyFileSync(join(src, n), join(dir, label, n));
  }
  return dir;
}

function userError(r: ReturnType<typeof cli>, code: string, names: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr
    .trim()
    .split('\n')
    .filter((l) => !l.startsWith('note:'));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], new RegExp(`^error\\[${code}\\] `));
  assert.match(lines[0], names);
}

describe('bad image input on the command line', () => {
  const test = at('samples/digits/images/test.csv');
  it('a corrupt image: IMAGE_CORRUPT naming it', () => {
    const dir = folder('corrupt');
    const bad = join(dir, '1', 'broken.png');
    writeFileSync(bad, readFileSync(join(dir, '0', (readdirSync(join(dir, '0')) as string[])[0])).subarray(0, 40));
    userError(cli('audit', '--model', MODEL, '--train', dir, '--no-cache'), 'IMAGE_CORRUPT', /1\/broken\.png/);
  });
  it('a manifest path that does not exist: IMAGE_NOT_FOUND naming the manifest line and the path', () => {
    const m = join(tmp, 'manifest.csv');
    const imgs = at('samples/digits/images');
    writeFileSync(m, `path,label\n${imgs}/train/0/0004.png,0\n${imgs}/train/0/nope.png,0\n`);
    userError(
      cli('audit', '--model', MODEL, '--train', m, '--no-cache'),
      'IMAGE_NOT_FOUND',
      /manifest\.csv:3: .*nope\.png/,
    );
  });
  it('a folder of mixed sizes with no resize rule: IMAGE_SIZE_MISMATCH naming the file and the sizes', () => {
    const dir = folder('mixed');
    const png = new PNG({ width: 9, height: 9, colorType: 0 });
    png.data.fill(40);
    writeFileSync(join(dir, '1', 'big.png'), PNG.sync.write(png, { colorType: 0 }));
    userError(
      cli('audit', '--model', MODEL, '--train', dir, '--no-cache'),
      'IMAGE_SIZE_MISMATCH',
      /1\/big\.png: this image is 9×9/,
    );
  });
  it('an empty class folder: a note naming it, not an error', () => {
    const dir = folder('empty');
    mkdirSync(join(dir, '2'));
    const r = cli('audit', '--model', MODEL, '--train', dir, '--no-cache', '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /note: the class folder \S*empty\/2 has no images/);
    assert.equal(JSON.parse(r.stdout).train.rows, 6);
  });
  it('an unsupported image format: IMAGE_UNSUPPORTED naming the file', () => {
    const dir = folder('tiff');
    writeFileSync(join(dir, '0', 'scan.tif'), Buffer.from('II*\x00\x08\x00\x00\x00\x00\x00', 'latin1'));
    userError(cli('audit', '--model', MODEL, '--train', dir, '--no-cache'), 'IMAGE_UNSUPPORTED', /0\/scan\.tif: TIFF/);
  });
  it('a Parquet file with no usable column: NO_USABLE_COLUMN naming it', () => {
    userError(
      cli('audit', '--model', MODEL, '--train', at('test/fixtures/images/no_usable.parquet'), '--no-cache'),
      'NO_USABLE_COLUMN',
      /no_usable\.parquet: no usable column/,
    );
  });
  it('explains a single image that sits in no data file, for its predicted class', () => {
    const image = (readdirSync(at('samples/digits/images/test/3')) as string[])[0];
    const r = cli(
      'explain',
      '--model',
      MODEL,
      '--train',
      at('samples/digits/images/train'),
      '--test',
      at(`samples/digits/images/test/3/${image}`),
      '--test-row',
      '0',
      '--top',
      '2',
      '--json',
      '--no-cache',
    );
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.test.labelled, false);
    assert.ok(j.test.file.endsWith(`test/3/${image}`));
    assert.ok(
      j.scores.every((s: { file?: string; line?: number }) => typeof s.file === 'string' && s.line === undefined),
    );
    assert.ok(j.preprocess.steps.length >= 4);
    void test;
  });
  it('clean on an image folder writes a new manifest, never touching the images', () => {
    const dir = folder('clean');
    const out = join(tmp, 'cleaned.csv');
    const r = cli(
      'clean',
      '--model',
      MODEL,
      '--train',
      dir,
      '--validation',
      at('samples/digits/images/test.csv'),
      '--remove',
      'rows:0,4',
      '--out',
      out,
      '--json',
      '--no-cache',
    );
    assert.equal(r.code, 0, r.stderr);
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(lines[0], 'path,label');
    assert.equal(lines.length, 1 + 4);
    assert.match(lines[1], /^clean\/0\/\d{4}\.png,0$/);
    void cpSync;
  });
});

describe('what the extension shows of file rows', () => {
  it('a Hugging Face Parquet row: its fields in words and its image; listed rows: their file, row and thumbnail', async () => {
    const file = at('samples/digits/images/train.parquet');
    const d = await rowDetail(file, 5, 'Training row 5');
    assert.deepEqual(
      d.fields.map((f) => f.name),
      ['image', 'label'],
    );
    assert.match(d.fields[0].value, /^PNG image, \d+ bytes, path 0005\.png$/);
    assert.equal(d.fields[1].value, '3');
    assert.ok(d.image?.startsWith('data:image/png;base64,'));
    const files = await rowFiles(
      {
        kind: 'shards',
        files: [file],
        stamps: [],
        kinds: null,
        file: Int32Array.of(0, 0),
        fileRow: Int32Array.of(5, 7),
        manifest: null,
      },
      [0, 1],
    );
    assert.equal(files.get(1)!.fileRow, 7);
    assert.ok(files.get(0)!.thumb!.startsWith('data:image/png;base64,'));
    const png = Buffer.from(files.get(0)!.thumb!.split(',')[1], 'base64');
    const img = PNG.sync.read(png);
    assert.deepEqual([img.width, img.height], [8, 8], 'small images are not enlarged (the panel scales them up)');
  });
});

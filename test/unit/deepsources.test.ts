/**
 * Beyond the head on every source: the digits sample as an image folder, a manifest and Hugging
 * Face Parquet gives the same deep explain (--layers 2) and deep audit as its CSV, whose rows hold
 * the same pixel values (samples/digits/preprocess.json's std gives them back exactly); the RGB image
 * folder's deep explain (last 2 and all layers) against the float64 torch reference of
 * scripts/fixtures/images_deep.py on torchvision's tensors.
 */
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { audit } from '../../src/core/audit';
import { explain } from '../../src/core/explain';
import { RowsCache } from '../../src/core/cache/store';
import { DeepEngine } from '../../src/core/model/deep';
import { Engine } from '../../src/core/model/engine';
import { decode, relError } from '../helpers/deep';

const at = (p: string) => resolve(__dirname, '../..', p);
const model = at('test/fixtures/digits/cnn_logsoftmax.onnx');
const images = { preprocess: { std: [15 / 255] } };

/**
 * The CSV row of each image-folder row, listed here on its own: class folders in sorted order,
 * files sorted within each (torchvision's order), each file named by its CSV row.
 */
function folderToCsv(dir: string): number[] {
  const out: number[] = [];
  for (const c of readdirSync(dir).sort())
    for (const f of readdirSync(join(dir, c)).sort()) out.push(Number(basename(f, '.png')));
  return out;
}

let eng: Engine;
before(async () => {
  eng = await Engine.open(model);
});
after(async () => {
  await eng.release();
});

describe('--layers 2 on image folders, manifests and Parquet', () => {
  it("explain's head-vs-last-2 agreement: skipped by default on an image folder (a note), the CSV's with --agreement", async () => {
    const base = { model, testRow: 17, stability: false, damping: 1e-3 } as const;
    const csv = await explain(
      { ...base, train: at('samples/digits/train.csv'), test: at('samples/digits/test.csv') },
      eng,
    );
    assert.ok(csv.agreement, 'a table gets the agreement by default');
    const folder = {
      ...base,
      train: at('samples/digits/images/train'),
      test: at('samples/digits/images/test.csv'),
      images,
    };
    const skipped = await explain(folder, eng);
    assert.equal(skipped.agreement, null);
    assert.ok(
      skipped.notes.some((n) => n.includes('--agreement runs it')),
      skipped.notes.join('; '),
    );
    const forced = await explain({ ...folder, agreement: true }, eng);
    assert.ok(forced.agreement);
    assert.ok(Math.abs(forced.agreement.spearman - csv.agreement.spearman) < 1e-9);
    // The folder lists its rows in class-folder order: its row i is the CSV's row order[i].
    const order = folderToCsv(at('samples/digits/images/train'));
    const toCsv = (rows: number[]) => rows.map((i) => order[i]);
    const [f, c] = [forced.agreement, csv.agreement];
    for (const side of ['helpful', 'harmful'] as const) {
      assert.equal(f[side].overlap, c[side].overlap);
      assert.deepEqual(toCsv(f[side].head), c[side].head);
      assert.deepEqual(toCsv(f[side].deeper), c[side].deeper);
    }
  });

  it("the rows cache beyond the head on an image folder: a warm --agreement decodes no image; a changed image's content is a miss", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'il-deepsrc-'));
    const train = join(dir, 'train');
    cpSync(at('samples/digits/images/train'), train, { recursive: true });
    const cache = new RowsCache(join(dir, 'cache'));
    const req = {
      model,
      train,
      test: at('samples/digits/images/test.csv'),
      images,
      testRow: 17,
      stability: false,
      damping: 1e-3,
      agreement: true,
    } as const;
    const reads: string[] = [];
    const pass = DeepEngine.prototype.pass;
    DeepEngine.prototype.pass = function (this: DeepEngine, path, ...rest) {
      reads.push(path);
      return pass.call(this, path, ...rest);
    };
    try {
      const cold = await explain({ ...req, cache }, eng);
      assert.ok(reads.length > 0);
      reads.length = 0;
      const warm = await explain({ ...req, testRow: 18, cache }, eng);
      assert.equal(reads.length, 0);
      assert.equal(warm.train.cache, 'hit');
      const fresh = await explain({ ...req, testRow: 18, cache: null }, eng);
      assert.ok(Math.abs(warm.agreement!.spearman - fresh.agreement!.spearman) < 1e-9);
      assert.deepEqual(warm.agreement!.helpful, fresh.agreement!.helpful);
      assert.ok(cold.agreement);
      // Another image's bytes in place of one (a folder's own stamp does not change): the head's cache
      // re-reads that file, and the deep entry, whose rows hash no longer matches, is a miss.
      const [a, b] = readdirSync(join(train, '3')).sort();
      copyFileSync(join(train, '3', b), join(train, '3', a));
      reads.length = 0;
      const changed = await explain({ ...req, testRow: 18, cache }, eng);
      assert.ok(reads.includes(train));
      const truth = await explain({ ...req, testRow: 18, cache: null }, eng);
      assert.ok(relError(changed.scores.lossChangeIfRemoved, truth.scores.lossChangeIfRemoved) <= 1e-12);
      assert.ok(Math.abs(changed.agreement!.spearman - truth.agreement!.spearman) < 1e-9);
      assert.notEqual(changed.agreement!.spearman, warm.agreement!.spearman);
    } finally {
      DeepEngine.prototype.pass = pass;
    }
  });

  it('explain: the CSV scores, row for row', async () => {
    const base = { model, testRow: 17, layers: 2, stability: false, damping: 1e-3 } as const;
    const csv = await explain(
      { ...base, train: at('samples/digits/train.csv'), test: at('samples/digits/test.csv') },
      eng,
    );
    assert.deepEqual(
      csv.layers.map((l) => l.index),
      [1, 2],
    );
    const order = folderToCsv(at('samples/digits/images/train'));
    const variants = [
      { train: 'samples/digits/images/train', test: 'samples/digits/images/test.csv', folder: true },
      { train: 'samples/digits/images/train.csv', test: 'samples/digits/images/test.csv', folder: false },
      { train: 'samples/digits/images/train.parquet', test: 'samples/digits/images/test.parquet', folder: false },
    ];
    for (const v of variants) {
      const r = await explain({ ...base, train: at(v.train), test: at(v.test), images }, eng);
      assert.deepEqual(r.layers, csv.layers);
      assert.equal(r.test.predicted, csv.test.predicted);
      if (v.folder) {
        // Each row's image, for the panel and the CLI (the row's file rather than a line).
        const loc = r.rows.locator!;
        assert.deepEqual(
          Array.from(r.rows.label, (_, i) => Number(basename(loc.files[loc.file[i]], '.png'))),
          order,
        );
      }
      for (const name of ['influence', 'lossChangeIfRemoved', 'selfInfluence', 'classificationInfluence'] as const) {
        const got = r.scores[name];
        const want = v.folder ? Float64Array.from(order, (row) => csv.scores[name][row]) : csv.scores[name];
        const e = relError(got, want);
        assert.ok(e <= 1e-9, `${v.train}: ${name} relative error ${e.toExponential(2)}`);
      }
    }
  });

  it('audit: the CSV suspicion and memorized flags; the held-out set as an image folder', async () => {
    const base = { model, damping: 1e-3, tau: 0, layers: 2, stability: false, agreement: false } as const;
    const csv = await audit(
      {
        ...base,
        train: at('samples/digits/train.csv'),
        heldOut: { path: at('samples/digits/validation.csv'), source: 'validation' },
      },
      eng,
    );
    const r = await audit(
      {
        ...base,
        train: at('samples/digits/images/train.csv'),
        heldOut: { path: at('samples/digits/images/validation'), source: 'validation' },
        images,
      },
      eng,
    );
    assert.equal(r.rows.n, csv.rows.n);
    for (const name of ['selfInfluence', 'heldOutInfluence', 'suspicion'] as const) {
      const e = relError(r.scores[name]!, csv.scores[name]!);
      assert.ok(e <= 1e-9, `${name} relative error ${e.toExponential(2)}`);
    }
    assert.deepEqual(r.scores.memorized, csv.scores.memorized);
  });
});

describe('--layers 2 and all on the RGB image folder against its float64 torch reference', () => {
  const ref = JSON.parse(readFileSync(at('test/fixtures/images/rgb/deep.json'), 'utf8')) as {
    lambda: number;
    trainFiles: string[];
    testRows: number[];
    depths: Record<string, { layers: string[]; params: number; selfInfluence: unknown; lossChangeIfRemoved: unknown }>;
  };
  for (const [depth, want] of Object.entries(ref.depths)) {
    it(`depth ${depth} (${want.params} parameters): lossChangeIfRemoved and selfInfluence within 1e-5 (torchvision's tensors, our preprocessing)`, async () => {
      const rgb = at('test/fixtures/images/rgb/model.onnx');
      const m = await Engine.open(rgb);
      try {
        const lossChange = decode(want.lossChangeIfRemoved);
        const n = ref.trainFiles.length;
        for (const [k, t] of ref.testRows.entries()) {
          const r = await explain(
            {
              model: rgb,
              train: at('test/fixtures/images/rgb/train'),
              test: at('test/fixtures/images/rgb/test'),
              testRow: t,
              damping: ref.lambda,
              layers: Number(depth),
              curvature: 'exact',
              stability: false,
            },
            m,
          );
          assert.deepEqual(
            r.layers.map((l) => l.name),
            want.layers,
          );
          const e = relError(r.scores.lossChangeIfRemoved, lossChange.subarray(k * n, (k + 1) * n));
          assert.ok(e <= 1e-5, `test row ${t}: lossChangeIfRemoved ${e.toExponential(2)}`);
          const e2 = relError(r.scores.selfInfluence, decode(want.selfInfluence));
          assert.ok(e2 <= 1e-5, `selfInfluence ${e2.toExponential(2)}`);
        }
      } finally {
        await m.release();
      }
    });
  }
});

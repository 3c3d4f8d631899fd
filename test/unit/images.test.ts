/**
 * Image decoding, resizing and preprocessing against Pillow and torchvision: the references were
 * computed by scripts/fixtures/make_fixtures.py (--only images) with Debian's python3-pil and
 * python3-torchvision and are stored under test/fixtures/images/.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { InfluenceError } from '../../src/core/errors';
import { decodeImage } from '../../src/core/data/images/decode';
import { orient, toRgb } from '../../src/core/data/images/pixels';
import {
  parsePreprocess,
  prepareImage,
  resolvePipeline,
  type ModelInput,
  type PreprocessConfig,
} from '../../src/core/data/images/preprocess';
import { centerCrop, resizeBilinear, roundHalfEven, shorterSideSize } from '../../src/core/data/images/resize';

const FIX = resolve(__dirname, '../fixtures/images');

interface PillowRef {
  mode: string;
  width: number;
  height: number;
  rgb: string;
  orientation?: number;
  orientedWidth?: number;
  orientedHeight?: number;
  oriented?: string;
  highByte?: string;
}
const pillow: { files: Record<string, PillowRef> } = JSON.parse(readFileSync(join(FIX, 'decode/pillow.json'), 'utf8'));
const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));

function diff(a: Uint8Array, b: Uint8Array): { mean: number; max: number } {
  assert.equal(a.length, b.length);
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    sum += d;
    max = Math.max(max, d);
  }
  return { mean: sum / a.length, max };
}

const GREY_MODES = new Set(['1', 'L', 'LA', 'I', 'I;16', 'I;16B']);

describe('decoders against Pillow (convert("RGB"))', () => {
  const names = Object.keys(pillow.files);
  it('covers every format and PNG variant', () => {
    for (const prefix of ['png_d1_', 'png_d2_', 'png_d4_', 'png_d8_', 'png_d16_', 'png_trns', 'jpg_', 'webp_', 'bmp_'])
      assert.ok(
        names.some((n) => n.startsWith(prefix)),
        prefix,
      );
    assert.ok(names.filter((n) => /_i\.png$/.test(n)).length >= 15, 'interlaced PNGs');
  });
  for (const name of names) {
    const ref = pillow.files[name];
    it(name, async () => {
      const d = await decodeImage(readFileSync(join(FIX, 'decode', name)), name);
      assert.equal(d.width, ref.width);
      assert.equal(d.height, ref.height);
      // Pillow opens 16-bit grey+alpha as RGBA (R = G = B): the same values either way.
      if (!name.startsWith('png_d16_c4'))
        assert.equal(d.channels === 1, GREY_MODES.has(ref.mode), `grey: ours ${d.mode}, Pillow ${ref.mode}`);
      const ours = toRgb(d).data;
      if (ref.highByte) {
        // 16-bit grey: Pillow 9.4 clips to 255 in convert(); the engine keeps the high byte (README).
        assert.deepEqual(ours, bytes(ref.highByte));
      } else if (d.format === 'jpeg') {
        const { mean, max } = diff(ours, bytes(ref.rgb));
        assert.ok(mean <= 1 && max <= 8, `JPEG mean ${mean} max ${max}`);
      } else {
        assert.deepEqual(ours, bytes(ref.rgb), 'exact');
      }
      if (ref.oriented) {
        assert.equal(d.orientation, ref.orientation);
        const o = orient(toRgb(d), d.orientation);
        assert.equal(o.width, ref.orientedWidth);
        assert.equal(o.height, ref.orientedHeight);
        const { mean, max } = diff(o.data, bytes(ref.oriented));
        assert.ok(d.format === 'jpeg' ? mean <= 1 && max <= 8 : max === 0, `${mean} ${max}`);
      }
    });
  }
  it('JPEG decoding is exact against Pillow (libjpeg-turbo) on these files', async () => {
    let worst = 0;
    for (const name of names.filter((n) => n.startsWith('jpg_'))) {
      const d = await decodeImage(readFileSync(join(FIX, 'decode', name)), name);
      worst = Math.max(worst, diff(toRgb(d).data, bytes(pillow.files[name].rgb)).max);
    }
    assert.equal(worst, 0);
  });
});

describe('bad image files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'il-img-'));
  const png = readFileSync(join(FIX, 'decode/png_d8_c2_n.png'));
  const jpg = readFileSync(join(FIX, 'decode/jpg_420_base.jpg'));
  const cases: [string, Uint8Array, string, RegExp][] = [
    ['truncated.png', png.subarray(0, 60), 'IMAGE_CORRUPT', /decode/],
    ['truncated.jpg', jpg.subarray(0, jpg.length - 40), 'IMAGE_CORRUPT', /truncated/],
    ['empty.png', new Uint8Array(0), 'IMAGE_CORRUPT', /empty/],
    ['a.gif', Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00;', 'latin1'), 'IMAGE_UNSUPPORTED', /GIF/],
    ['a.tif', Buffer.from('II*\x00\x08\x00\x00\x00\x00\x00', 'latin1'), 'IMAGE_UNSUPPORTED', /TIFF/],
    ['text.png', Buffer.from('not an image at all'), 'IMAGE_UNSUPPORTED', /supported format/],
  ];
  for (const [name, data, code, msg] of cases) {
    it(`${name}: ${code}, naming the file`, async () => {
      const p = join(dir, name);
      writeFileSync(p, data);
      await assert.rejects(
        decodeImage(data, p),
        (e: unknown) => e instanceof InfluenceError && e.code === code && e.place.file === p && msg.test(e.message),
      );
    });
  }
});

describe('Pillow BILINEAR and torchvision Resize / CenterCrop / Normalize', () => {
  const tv: {
    cases: {
      file: string;
      config: PreprocessConfig & { resize?: number | [number, number] };
      shape: number[];
      data: string;
    }[];
  } = JSON.parse(readFileSync(join(FIX, 'resize/torchvision.json'), 'utf8'));
  for (const c of tv.cases) {
    it(`${c.file} ${JSON.stringify(c.config)}`, async () => {
      const [C, H, W] = c.shape;
      const d = await decodeImage(readFileSync(join(FIX, 'resize', c.file)), c.file);
      const model: ModelInput = {
        path: '/nowhere/model.onnx',
        inputDims: [C, H, W],
        F: C * H * W,
        float64: false,
        metadata: undefined,
      };
      const { pipeline } = resolvePipeline(model, parsePreprocess(c.config, 'test'));
      const out = new Float32Array(C * H * W);
      prepareImage(d, pipeline, c.file, false, out, 0);
      const raw = Buffer.from(c.data, 'base64');
      const want = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      let sum = 0;
      let max = 0;
      for (let i = 0; i < want.length; i++) {
        const e = Math.abs(out[i] - want[i]);
        sum += e;
        max = Math.max(max, e);
      }
      // ≤ 1/255 mean is the requirement; the port is exact up to float32 rounding of the normalization.
      assert.ok(sum / want.length <= 1 / 255, `mean ${sum / want.length}`);
      assert.ok(max < 1e-5, `max ${max}`);
    });
  }
  it('torchvision sizes: the long side truncated, crop offsets rounded half to even', () => {
    assert.deepEqual(shorterSideSize(500, 375, 256), [341, 256]);
    assert.deepEqual(shorterSideSize(375, 500, 256), [256, 341]);
    assert.equal(roundHalfEven(58.5), 58);
    assert.equal(roundHalfEven(1.5), 2);
    assert.equal(roundHalfEven(2.5), 2);
    // A 5×3 grey image cropped to 2×2: left = round(1.5) = 2, top = round(0.5) = 0.
    const img = Uint8Array.from({ length: 15 }, (_, i) => i);
    assert.deepEqual(Array.from(centerCrop(img, 5, 3, 1, 2, 2)), [2, 3, 7, 8]);
    // Same size: a copy.
    assert.deepEqual(Array.from(resizeBilinear(img, 5, 3, 1, 5, 3)), Array.from(img));
  });
});

describe('preprocessing configuration', () => {
  const model = (dims: number[], metadata?: string): ModelInput => ({
    path: join(FIX, 'rgb/model.onnx'),
    inputDims: dims,
    F: dims.reduce((a, b) => a * b, 1),
    float64: false,
    metadata,
  });
  it('takes each field from the model metadata first, then preprocess.json, then settings or flags, with a note on what is overridden', () => {
    const { pipeline, notes } = resolvePipeline(model([3, 16, 16], JSON.stringify({ resize: 16, mean: [0.5] })), {
      resize: 20,
      std: [0.5],
      exif: 'apply',
    });
    assert.deepEqual(pipeline.resize, { kind: 'shorter', size: 16 });
    assert.equal(pipeline.from.resize, 'model metadata');
    assert.deepEqual(pipeline.std, [0.5]);
    assert.equal(pipeline.from.std, 'settings or flags');
    assert.equal(pipeline.exif, 'apply');
    assert.equal(pipeline.from.scale, 'default');
    assert.equal(notes.length, 1);
    assert.match(notes[0], /resize/);
  });
  it('infers the layout and channels from the model input', () => {
    assert.equal(resolvePipeline(model([3, 8, 8])).pipeline.layout, 'nchw');
    const nhwc = resolvePipeline(model([8, 8, 3])).pipeline;
    assert.equal(nhwc.layout, 'nhwc');
    assert.equal(nhwc.channels, 'rgb');
    assert.equal(resolvePipeline(model([1, 8, 8])).pipeline.channels, 'grey');
    assert.equal(resolvePipeline(model([64])).pipeline.channels, 'grey');
    assert.equal(resolvePipeline(model([192])).pipeline.channels, 'rgb');
  });
  it('rejects bad configurations with PREPROCESS_INVALID', () => {
    for (const bad of [{ resize: 'big' }, { mean: 'x' }, { std: [0] }, { layout: 'chw' }, { colour: 'rgb' }]) {
      assert.throws(
        () => parsePreprocess(bad, 'test'),
        (e: unknown) => e instanceof InfluenceError && e.code === 'PREPROCESS_INVALID',
      );
    }
    assert.throws(() => resolvePipeline(model([1, 8, 8]), { channels: 'rgb' }), /one channel/);
    assert.throws(() => resolvePipeline(model([3, 8, 8]), { mean: [1, 2] }), /mean has 2 values/);
  });
  it('an image of another size with no resize rule is an error naming the file and both sizes', async () => {
    const d = await decodeImage(readFileSync(join(FIX, 'decode/png_d8_c2_n.png')), 'x.png');
    const { pipeline } = resolvePipeline(model([3, 8, 8]));
    assert.throws(
      () => prepareImage(d, pipeline, '/data/x.png', false, new Float32Array(192), 0),
      (e: unknown) =>
        e instanceof InfluenceError &&
        e.code === 'IMAGE_SIZE_MISMATCH' &&
        e.place.file === '/data/x.png' &&
        /13×11/.test(e.message) &&
        /8×8/.test(e.message),
    );
  });
  it('BGR, NHWC, grey↔RGB conversion and the normalization land where the model reads them', async () => {
    const d = {
      width: 2,
      height: 1,
      channels: 3 as const,
      data: Uint8Array.of(10, 20, 30, 40, 50, 60),
      format: 'png' as const,
      mode: 'RGB',
      orientation: 1,
    };
    const bgr = resolvePipeline(model([1, 2, 3]), {
      layout: 'nhwc',
      channels: 'bgr',
      scale: 1,
      mean: [1, 2, 3],
      std: [2],
    }).pipeline;
    const out = new Float32Array(6);
    prepareImage(d, bgr, 'x', false, out, 0);
    assert.deepEqual(Array.from(out), [
      (30 - 1) / 2,
      (20 - 2) / 2,
      (10 - 3) / 2,
      (60 - 1) / 2,
      (50 - 2) / 2,
      (40 - 3) / 2,
    ]);
    const grey = resolvePipeline(model([1, 1, 2]), { scale: 1 }).pipeline;
    const g = new Float32Array(2);
    const r = prepareImage(d, grey, 'x', false, g, 0);
    assert.equal(r.converted, 'grey');
    assert.deepEqual(Array.from(g), [
      (10 * 19595 + 20 * 38470 + 30 * 7471 + 0x8000) >>> 16,
      (40 * 19595 + 50 * 38470 + 60 * 7471 + 0x8000) >>> 16,
    ]);
  });
});

/**
 * Compressed Arrow IPC / Feather v2: LZ4_FRAME (pandas' `to_feather` default) and ZSTD bodies, made by
 * the reference `lz4` and `zstd` tools (scripts/fixtures/make_parquet.mjs), read by our LZ4 frame
 * decoder and fzstd. The compressed files give the uncompressed file's and the CSV's rows, audit and
 * explain; the decoder meets every frame feature and refuses malformed frames; a corrupt compressed
 * file exits 2 with ARROW_INVALID naming it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { compressionRegistry, CompressionType } from 'apache-arrow';
import { audit } from '../../src/core/audit';
import { zstdDecode } from '../../src/core/data/arrowCodecs';
import { openColumns } from '../../src/core/data/columnar';
import { emptyLz4Stats, lz4FrameDecode, xxh32, type Lz4Stats } from '../../src/core/data/lz4';
import { explain } from '../../src/core/explain';
import { Engine } from '../../src/core/model/engine';

const root = resolve(__dirname, '../..');
const at = (p: string) => resolve(root, p);
const noisy = (f: string) => at(`test/fixtures/noisy/${f}`);
const frame = (f: string) => new Uint8Array(readFileSync(at(`test/fixtures/lz4/${f}`)));
const tmp = mkdtempSync(join(tmpdir(), 'il-arrowz-'));

/** A CSV of numbers: its header and rows. */
function csv(path: string): { names: string[]; rows: number[][] } {
  const [head, ...lines] = readFileSync(path, 'utf8').trim().split('\n');
  return { names: head.split(','), rows: lines.map((l) => l.split(',').map(Number)) };
}

/** Every row of the named columns, numbers as numbers (int64 comes as bigint). */
async function readAll(path: string, columns?: string[]): Promise<{ names: string[]; rows: unknown[][] }> {
  const cf = await openColumns(path);
  try {
    const names = columns ?? cf.columns.map((c) => c.name);
    const rows: unknown[][] = [];
    for await (const batch of cf.batches(names)) {
      for (const r of batch) rows.push(r.map((v) => (typeof v === 'bigint' ? Number(v) : v)));
    }
    return { names, rows };
  } finally {
    await cf.close();
  }
}

/** The LZ4 frames decoded while `fn` runs, counted. */
async function lz4StatsOf(fn: () => Promise<unknown>): Promise<Lz4Stats> {
  const codec = compressionRegistry.get(CompressionType.LZ4_FRAME);
  assert.ok(codec?.decode, 'the LZ4_FRAME decoder is registered');
  const stats = emptyLz4Stats();
  compressionRegistry.set(CompressionType.LZ4_FRAME, { decode: (data) => lz4FrameDecode(data, stats) });
  try {
    await fn();
  } finally {
    compressionRegistry.set(CompressionType.LZ4_FRAME, codec);
  }
  return stats;
}

/** The `comment` column of train_list_lz4.arrow, as make_parquet.mjs makes it. */
function comments(n: number): string[] {
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) / 2 ** 24;
  const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length: n }, (_, i) =>
    i < 512
      ? 'ok '.repeat(43).slice(0, 128)
      : Array.from({ length: 8 }, () => letters[Math.floor(rand() * letters.length)]).join(''),
  );
}

describe('compressed Arrow files hold the rows of the uncompressed file and the CSV', () => {
  const train = csv(noisy('train.csv'));
  const validation = csv(noisy('validation.csv'));

  for (const file of ['train_lz4.feather', 'train_zstd.feather']) {
    it(`${file}: every column of every row, as train.arrow and train.csv`, async () => {
      const plain = await readAll(noisy('train.arrow'));
      let got!: Awaited<ReturnType<typeof readAll>>;
      const stats = await lz4StatsOf(async () => (got = await readAll(noisy(file))));
      assert.deepEqual(got.names, plain.names);
      assert.deepEqual(got.names, train.names);
      assert.equal(got.rows.length, 1000);
      assert.deepEqual(got.rows, plain.rows);
      assert.deepEqual(got.rows, train.rows);
      if (file === 'train_lz4.feather') {
        // As pyarrow writes LZ4_FRAME: 64 KB blocks, no checksums; one frame per column (one block each).
        assert.equal(stats.frames, 65);
        assert.equal(stats.blocks, 65);
        assert.equal(stats.maxBlockSize, 64 << 10);
        assert.equal(stats.blockChecksums + stats.contentChecksums + stats.contentSizes + stats.storedBlocks, 0);
      } else {
        assert.equal(stats.frames, 0);
      }
    });
  }

  it('train_zstd.feather: rows across its 300-row batches (rowsAt)', async () => {
    const cf = await openColumns(noisy('train_zstd.feather'));
    const rows = await cf.rowsAt(['p00', 'p63', 'label'], 250, 650);
    assert.deepEqual(
      rows.map((r) => r.map(Number)),
      train.rows.slice(250, 650).map((r) => [r[0], r[63], r[64]]),
    );
  });

  it('train_list_lz4.arrow: linked 64 KB blocks, every checksum, a stored block', async () => {
    let got!: Awaited<ReturnType<typeof readAll>>;
    const stats = await lz4StatsOf(async () => (got = await readAll(noisy('train_list_lz4.arrow'))));
    assert.deepEqual(got.names, ['pixels', 'comment', 'label']);
    assert.deepEqual(
      got.rows.map((r) => [...(r[0] as number[]), r[2]]),
      train.rows,
    );
    assert.deepEqual(
      got.rows.map((r) => r[1]),
      comments(1000),
    );
    // The pixels (256000 bytes: four linked blocks), the comment text (two linked, the last stored), the
    // labels (one); the comment's offsets do not shrink and are kept uncompressed.
    assert.deepEqual(
      { ...stats },
      {
        frames: 3,
        skippableFrames: 0,
        blocks: 7,
        storedBlocks: 1,
        linkedFrames: 2,
        blockChecksums: 7,
        contentChecksums: 3,
        contentSizes: 3,
        maxBlockSize: 64 << 10,
      },
    );
  });

  it('validation_list_lz4.arrow: 256 KB independent blocks, content checksums, as validation.csv', async () => {
    let got!: Awaited<ReturnType<typeof readAll>>;
    const stats = await lz4StatsOf(async () => (got = await readAll(noisy('validation_list_lz4.arrow'))));
    assert.deepEqual(
      got.rows.map((r) => [...(r[0] as number[]), r[1]]),
      validation.rows,
    );
    assert.equal(stats.maxBlockSize, 256 << 10);
    assert.equal(stats.frames, 2);
    assert.equal(stats.contentChecksums, 2);
    assert.equal(stats.linkedFrames + stats.blockChecksums, 0);
  });
});

describe('compressed Arrow files give the CSV audit and explain, number for number', () => {
  it('audit: LZ4 and ZSTD training files, LZ4 held-out file', async () => {
    const model = noisy('model.onnx');
    const eng = await Engine.open(model);
    try {
      const run = (train: string, validation: string) =>
        audit(
          {
            model,
            train: noisy(train),
            heldOut: { path: noisy(validation), source: 'validation' },
            damping: 'auto',
            tau: 0,
            stability: false,
          },
          eng,
        );
      const want = await run('train.csv', 'validation.csv');
      const pairs = [
        ['train_lz4.feather', 'validation.csv'],
        ['train_zstd.feather', 'validation_list_lz4.arrow'],
        ['train_list_lz4.arrow', 'validation_list_lz4.arrow'],
      ];
      for (const [train, validation] of pairs) {
        const a = await run(train, validation);
        assert.equal(a.rows.n, 1000);
        assert.deepEqual(Array.from(a.rows.labels), Array.from(want.rows.labels), `${train}: labels`);
        assert.deepEqual(Array.from(a.scores.memorized!), Array.from(want.scores.memorized!), `${train}: memorized`);
        for (const name of ['suspicion', 'selfInfluence', 'heldOutInfluence', 'lossWithout'] as const) {
          assert.deepEqual(Array.from(a.scores[name]!), Array.from(want.scores[name]!), `${train}: ${name}`);
        }
        assert.equal(a.heldOutAccuracy, want.heldOutAccuracy);
        assert.equal(a.heldOutLoss, want.heldOutLoss);
        assert.equal(a.damping, want.damping);
      }
    } finally {
      await eng.release();
    }
  });

  it('explain: test rows 3 and 17 against LZ4 and ZSTD training files', async () => {
    const model = noisy('model.onnx');
    const eng = await Engine.open(model);
    try {
      for (const testRow of [3, 17]) {
        const run = (train: string) =>
          explain({ model, train: noisy(train), test: noisy('test.csv'), testRow, stability: false }, eng);
        const want = await run('train.csv');
        for (const train of ['train_lz4.feather', 'train_zstd.feather', 'train_list_lz4.arrow']) {
          const r = await run(train);
          assert.equal(r.test.predicted, want.test.predicted);
          assert.equal(r.test.loss, want.test.loss);
          assert.deepEqual(Array.from(r.rows.label), Array.from(want.rows.label));
          for (const name of [
            'influence',
            'lossChangeIfRemoved',
            'selfInfluence',
            'classificationInfluence',
          ] as const) {
            assert.deepEqual(
              Array.from(r.scores[name]),
              Array.from(want.scores[name]),
              `${train}, row ${testRow}: ${name}`,
            );
          }
        }
      }
    } finally {
      await eng.release();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The LZ4 frame decoder on its own

const flipped = new Uint8Array(readFileSync(noisy('flipped.json')));
const png = new Uint8Array(readFileSync(at('samples/digits/images/train/0/0002.png')));
const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
/** A skippable frame (magic 0x184D2A53) of `n` bytes. */
const skippable = (n: number) => concat(Uint8Array.of(0x53, 0x2a, 0x4d, 0x18, n, 0, 0, 0), new Uint8Array(n).fill(7));
const throwsLz4 = (data: Uint8Array, what: RegExp) =>
  assert.throws(
    () => lz4FrameDecode(data),
    (e: unknown) => e instanceof Error && /^LZ4 frame: /.test(e.message) && what.test(e.message),
  );

describe('the LZ4 frame decoder', () => {
  it('xxHash32 gives the reference values', () => {
    assert.equal(xxh32(new Uint8Array(0)), 0x02cc5d05);
    assert.equal(xxh32(new TextEncoder().encode('abc')), 0x32d153ff);
  });

  it('an empty frame decodes to nothing', () => {
    const stats = emptyLz4Stats();
    assert.equal(lz4FrameDecode(frame('empty.lz4'), stats).length, 0);
    assert.equal(stats.frames, 1);
    assert.equal(stats.blocks, 0);
    assert.equal(stats.contentChecksums, 1);
    // An end mark with the high bit set ends the frame too (as in the reference decoder).
    const marked = frame('empty.lz4');
    marked[10] = 0x80;
    assert.equal(lz4FrameDecode(marked).length, 0);
  });

  it('a frame with block and content checksums and its content size', () => {
    const stats = emptyLz4Stats();
    assert.deepEqual(lz4FrameDecode(frame('flipped.json.lz4'), stats), flipped);
    assert.equal(stats.blockChecksums, 1);
    assert.equal(stats.contentChecksums, 1);
    assert.equal(stats.contentSizes, 1);
  });

  it('a 4 MB block maximum and matches thousands of bytes long', () => {
    const stats = emptyLz4Stats();
    const want = concat(...Array<Uint8Array>(100).fill(flipped));
    assert.deepEqual(lz4FrameDecode(frame('flipped.json.x100.lz4'), stats), want);
    assert.equal(stats.maxBlockSize, 4 << 20);
    assert.equal(stats.blocks, 1);
  });

  it('a stored (uncompressed) block', () => {
    const stats = emptyLz4Stats();
    assert.deepEqual(lz4FrameDecode(frame('png.lz4'), stats), png);
    assert.equal(stats.storedBlocks, 1);
  });

  it('concatenated frames, with skippable and empty frames among them', () => {
    const stats = emptyLz4Stats();
    const data = concat(
      frame('flipped.json.lz4'),
      skippable(5),
      frame('empty.lz4'),
      frame('png.lz4'),
      skippable(0),
      frame('flipped.json.plain.lz4'),
    );
    assert.deepEqual(lz4FrameDecode(data, stats), concat(flipped, png, flipped));
    assert.equal(stats.frames, 4);
    assert.equal(stats.skippableFrames, 2);
  });

  it('every truncation throws, with and without checksums', () => {
    for (const name of ['flipped.json.lz4', 'flipped.json.plain.lz4', 'png.lz4', 'empty.lz4']) {
      const f = frame(name);
      for (let n = 0; n < f.length; n++)
        throwsLz4(f.subarray(0, n), /truncated|no data|ends without|content size too large/);
    }
    // Cut inside the second frame of two.
    const two = concat(frame('png.lz4'), frame('flipped.json.plain.lz4'));
    for (let n = frame('png.lz4').length + 1; n < two.length; n += 97)
      throwsLz4(two.subarray(0, n), /truncated|ends without/);
    throwsLz4(skippable(5).subarray(0, 10), /truncated skippable/);
  });

  it('corrupt frames throw: offsets, sizes, magic, flags and checksums', () => {
    const plain = frame('flipped.json.plain.lz4');
    // Header: magic (4), FLG, BD, HC; then the block size (4) and the first sequence's token.
    const block = 7 + 4;
    const token = plain[block];
    let lit = token >>> 4;
    let p = block + 1;
    if (lit === 15) for (let b = 255; b === 255;) lit += b = plain[p++];
    const offsetAt = p + lit;
    const withOffset = (offset: number) => {
      const f = plain.slice();
      f[offsetAt] = offset & 0xff;
      f[offsetAt + 1] = offset >>> 8;
      return f;
    };
    assert.deepEqual(lz4FrameDecode(withOffset(plain[offsetAt] | (plain[offsetAt + 1] << 8))), flipped);
    throwsLz4(withOffset(lit + 1), /points before the start/);
    throwsLz4(withOffset(0), /offset of 0/);
    // A block larger than the frame's maximum, and a block size past the end.
    const size = (v: number) => {
      const f = plain.slice();
      new DataView(f.buffer).setUint32(7, v, true);
      return f;
    };
    throwsLz4(size(0x7fffffff), /exceeds/);
    throwsLz4(size(plain.length), /truncated block/);
    // Magic, version, reserved bits, dictionary: rejected.
    const edit = (i: number, v: number, f = plain.slice()) => ((f[i] = v), f);
    throwsLz4(edit(0, 0x05), /not an LZ4 frame/);
    throwsLz4(edit(4, plain[4] ^ 0x80), /version/);
    throwsLz4(edit(5, plain[5] | 0x01), /reserved/);
    throwsLz4(edit(4, plain[4] | 0x01), /dictionary/);
    throwsLz4(edit(6, plain[6] ^ 0xff), /header checksum/);
    // Bytes after the last frame.
    throwsLz4(concat(frame('png.lz4'), Uint8Array.of(1, 2, 3)), /truncated frame magic/);
    throwsLz4(concat(frame('png.lz4'), Uint8Array.of(1, 2, 3, 4)), /not an LZ4 frame at byte 147/);
    // With checksums, a changed byte in the data, or in the content checksum.
    const sums = frame('flipped.json.lz4');
    throwsLz4(edit(100, sums[100] ^ 0x20, sums.slice()), /block checksum mismatch/);
    throwsLz4(edit(sums.length - 1, sums[sums.length - 1] ^ 1, sums.slice()), /content checksum mismatch/);
    // Without checksums the same change goes unseen: the checksums are what catch it.
    assert.notDeepEqual(lz4FrameDecode(edit(100, plain[100] ^ 0x20)), flipped);
  });

  it('ZSTD: a buffer that is not Zstandard, and a truncated frame, throw', () => {
    assert.throws(() => zstdDecode(Uint8Array.of(1, 2, 3, 4, 5, 6)), /^Error: ZSTD: not a Zstandard frame/);
    const file = readFileSync(noisy('train_zstd.feather'));
    const start = file.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const raw = Number(file.readBigInt64LE(start - 8));
    let len = 0;
    for (let n = 6; n < 4096 && !len; n++) {
      try {
        if (zstdDecode(file.subarray(start, start + n)).length === raw) len = n;
      } catch {
        // not yet a whole frame
      }
    }
    assert.ok(len > 0, 'the first ZSTD frame of train_zstd.feather');
    assert.throws(() => zstdDecode(file.subarray(start, start + len - 3)), /^Error: ZSTD: /);
  });
});

// ---------------------------------------------------------------------------------------------
// The command line on a corrupt compressed file: exit 2 and one error line naming it

const CLI = at('dist/cli.js');
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, XDG_CACHE_HOME: join(tmp, 'xdg') },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A copy of a fixture with `edit` applied to its bytes, at the first `needle` (an LZ4 or ZSTD magic). */
function spoiled(name: string, how: string, needle: number[], edit: (f: Buffer, at: number) => void): string {
  const f = readFileSync(noisy(name));
  const i = f.indexOf(Buffer.from(needle));
  assert.ok(i > 0, `${name}: ${needle} found`);
  edit(f, i);
  const out = join(tmp, `bad-${how}-${name}`);
  writeFileSync(out, f);
  return out;
}

const LZ4_MAGIC = [0x04, 0x22, 0x4d, 0x18];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

describe('a corrupt compressed Arrow file on the command line', () => {
  const model = noisy('model.onnx');
  const cases: [string, string, RegExp][] = [
    [spoiled('train_lz4.feather', 'magic', LZ4_MAGIC, (f, i) => (f[i] = 0x05)), 'audit', /LZ4 frame: not an LZ4 frame/],
    [
      spoiled('train_lz4.feather', 'size', LZ4_MAGIC, (f, i) => f.writeUInt32LE(0x7ffffff0, i + 7)),
      'explain',
      /LZ4 frame: a block of \d+ bytes exceeds/,
    ],
    [
      spoiled('train_list_lz4.arrow', 'data', LZ4_MAGIC, (f, i) => (f[i + 15 + 4 + 1000] ^= 0x10)),
      'audit',
      /LZ4 frame: block checksum mismatch/,
    ],
    [
      spoiled('train_zstd.feather', 'magic', ZSTD_MAGIC, (f, i) => (f[i + 1] = 0)),
      'explain',
      /ZSTD: not a Zstandard frame/,
    ],
  ];
  for (const [file, command, message] of cases) {
    it(`${command} ${basename(file)}: ARROW_INVALID naming the file (${message.source})`, () => {
      const args = ['--model', model, '--train', file, '--no-cache'];
      if (command === 'explain') args.push('--test', noisy('test.csv'), '--test-row', '0');
      const r = cli(command, ...args);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '');
      const lines = r.stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('note:'));
      assert.equal(lines.length, 1, r.stderr);
      assert.ok(lines[0].startsWith(`error[ARROW_INVALID] ${file}: cannot read a record batch: `), lines[0]);
      assert.match(lines[0], message);
    });
  }
});

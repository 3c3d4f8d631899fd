import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { defaultCacheDir, hashFile, canonicalJson, keyOf, type CacheKeyParts } from '../../src/core/cache/keys';
import { RowsCache } from '../../src/core/cache/store';
import { CancelledError } from '../../src/core/errors';
import type { ForwardRows } from '../../src/core/model/engine';
import { synthRows } from '../helpers/cache-writer';

const root = path.resolve(__dirname, '../..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'il-cache-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let no = 0;
/** A fresh cache dir and a real small data file. */
function setup(content = 'label,f0,f1,f2\n0,1,2,3\n1,4,5,6\n'): { dir: string; data: string; cache: RowsCache } {
  const base = path.join(tmp, `case-${no++}`);
  fs.mkdirSync(base);
  const data = path.join(base, 'train.csv');
  fs.writeFileSync(data, content);
  const dir = path.join(base, 'cache');
  return { dir, data, cache: new RowsCache(dir) };
}

/** Where a rows entry lives: the key's hash in the cache dir. */
const entryPath = (cache: RowsCache, key: CacheKeyParts) => path.join(cache.dir, `${keyOf(key).hex}.ilcache`);

const MODEL = 'a'.repeat(64);
function keyFor(data: string, extra: Partial<CacheKeyParts> = {}): CacheKeyParts {
  return {
    modelSha256: MODEL,
    dataPath: data,
    options: { labelColumn: 'label', features: null, classes: ['a', 'b', 'c'] },
    ...extra,
  };
}

function bytes(a: Float32Array | Float64Array | Int32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function assertSameRows(got: ForwardRows | null, want: ForwardRows): void {
  assert.ok(got, 'expected a cache hit');
  assert.equal(got.n, want.n);
  assert.equal(got.C, want.C);
  assert.equal(got.D, want.D);
  assert.equal(got.bias, want.bias);
  for (const k of ['h', 'g', 'z', 'loss', 'labels', 'lines', 'offsets'] as const) {
    assert.equal(got[k].constructor, want[k].constructor, k);
    assert.equal(got[k].length, want[k].length, k);
    assert.ok(bytes(got[k]).equals(bytes(want[k])), `${k} differs`);
  }
  assert.deepEqual(got.table, want.table);
  assert.deepEqual(got.summary, want.summary);
}

function tempFiles(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')) : [];
}

describe('hashFile and keys', () => {
  test('hashFile is the sha256 of the content, across read chunks', async () => {
    const p = path.join(tmp, 'big.bin');
    const buf = Buffer.alloc(9 * 1024 * 1024 + 123);
    for (let i = 0; i < buf.length; i += 97) buf[i] = i & 255;
    fs.writeFileSync(p, buf);
    assert.equal(await hashFile(p), createHash('sha256').update(buf).digest('hex'));
    const e = path.join(tmp, 'empty.bin');
    fs.writeFileSync(e, '');
    assert.equal(await hashFile(e), createHash('sha256').digest('hex'));
    await assert.rejects(hashFile(path.join(tmp, 'nope.bin')), { code: 'ENOENT' });
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(hashFile(p, ac.signal), CancelledError);
  });

  test('canonical JSON sorts keys at every level', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [3, { y: 1, x: 2 }], c: undefined } }),
      '{"a":{"d":[3,{"x":2,"y":1}]},"b":1}',
    );
  });

  test('the entry name depends on model, options and the resolved data path only', () => {
    const { data, cache, dir } = setup();
    const p = entryPath(cache, keyFor(data));
    assert.match(path.basename(p), /^[0-9a-f]{64}\.ilcache$/);
    assert.equal(path.dirname(p), path.resolve(dir));
    // option order is not significant; values are
    assert.equal(
      entryPath(cache, keyFor(data, { options: { classes: ['a', 'b', 'c'], features: null, labelColumn: 'label' } })),
      p,
    );
    assert.notEqual(entryPath(cache, keyFor(data, { options: { labelColumn: 'y' } })), p);
    assert.notEqual(entryPath(cache, keyFor(data, { modelSha256: 'b'.repeat(64) })), p);
    // another spelling of the same file, and a symlink to it, share the entry
    const rel = path.relative(process.cwd(), data);
    assert.equal(entryPath(cache, keyFor(rel)), p);
    const link = path.join(path.dirname(data), 'link.csv');
    fs.symlinkSync(data, link);
    assert.equal(entryPath(cache, keyFor(link)), p);
  });
});

describe('store and load', () => {
  test('round-trips every array bit for bit, and the table and summary', async () => {
    const { data, cache, dir } = setup();
    // odd n and D so the f32/i32 arrays need padding; NaN payloads and -0 must survive
    const rows = await synthRows(data, 37, 5, 3, 2);
    rows.h[0] = -0;
    rows.z[1] = NaN;
    rows.g[2] = -Infinity;
    assert.equal(await cache.load(keyFor(data)), null, 'empty cache is a miss');
    assert.equal(await cache.store(keyFor(data), rows), true);
    const st = fs.statSync(entryPath(cache, keyFor(data)));
    if (process.platform !== 'win32') {
      assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
      assert.equal(st.mode & 0o777, 0o600);
    }
    assert.deepEqual(tempFiles(dir), []);
    const got = await cache.load(keyFor(data));
    assertSameRows(got, rows);
    assert.ok(Object.is(got!.h[0], -0));
    // a second cache object (a later run) reads it too, and a relative spelling gets its own path back
    const rel = path.relative(process.cwd(), data);
    const again = await new RowsCache(dir).load(keyFor(rel));
    assertSameRows(again, { ...rows, table: { ...rows.table, path: rel } });
  });

  test('zero rows, and a bigger entry spanning several I/O chunks', async () => {
    const { data, cache } = setup();
    const empty = await synthRows(data, 0, 4, 2, 1);
    assert.equal(await cache.store(keyFor(data), empty), true);
    assertSameRows(await cache.load(keyFor(data)), empty);
    const big = await synthRows(data, 70_001, 64, 10, 3); // h alone is ~17 MiB
    assert.equal(await cache.store(keyFor(data), big), true);
    assertSameRows(await cache.load(keyFor(data)), big);
  });

  test('overwriting an entry replaces it', async () => {
    const { data, cache } = setup();
    await cache.store(keyFor(data), await synthRows(data, 10, 4, 2, 1));
    const b = await synthRows(data, 12, 3, 4, 9);
    assert.equal(await cache.store(keyFor(data), b), true);
    assertSameRows(await cache.load(keyFor(data)), b);
  });

  test('inconsistent rows are not stored (and store does not throw)', async () => {
    const { data, cache } = setup();
    const rows = await synthRows(data, 10, 4, 2, 1);
    assert.equal(await cache.store(keyFor(data), { ...rows, h: new Float32Array(39) }), false);
    assert.equal(await cache.store(keyFor(data), { ...rows, offsets: new Float64Array(10) }), false);
    assert.equal(await cache.store(keyFor(data), { ...rows, summary: { ...rows.summary, rows: 9 } }), false);
    assert.equal(fs.existsSync(entryPath(cache, keyFor(data))), false);
  });

  test('I/O failures on store return false and leave nothing behind', async () => {
    const { data, dir } = setup();
    const rows = await synthRows(data, 10, 4, 2, 1);
    // the cache "dir" is a file: mkdir fails
    fs.writeFileSync(dir, 'not a dir');
    assert.equal(await new RowsCache(dir).store(keyFor(data), rows), false);
    fs.rmSync(dir);
    // the entry path is a directory: the rename fails after the temp file is written
    const cache = new RowsCache(dir);
    fs.mkdirSync(entryPath(cache, keyFor(data)), { recursive: true });
    fs.writeFileSync(path.join(entryPath(cache, keyFor(data)), 'x'), '');
    assert.equal(await cache.store(keyFor(data), rows), false);
    assert.deepEqual(tempFiles(dir), []);
    assert.equal(await cache.load(keyFor(data)), null);
  });
});

describe('misses', () => {
  async function stored(): Promise<{ data: string; cache: RowsCache; rows: ForwardRows; entry: string }> {
    const s = setup();
    const rows = await synthRows(s.data, 20, 4, 3, 4);
    assert.equal(await s.cache.store(keyFor(s.data), rows), true);
    assertSameRows(await s.cache.load(keyFor(s.data)), rows);
    return { ...s, rows, entry: entryPath(s.cache, keyFor(s.data)) };
  }

  test('a different model sha or different options miss', async () => {
    const { data, cache, entry } = await stored();
    assert.equal(await cache.load(keyFor(data, { modelSha256: 'b'.repeat(64) })), null);
    assert.equal(
      await cache.load(keyFor(data, { options: { labelColumn: 'label', features: ['f0'], classes: ['a', 'b', 'c'] } })),
      null,
    );
    assert.ok(fs.existsSync(entry), 'other keys leave the entry alone');
    assert.ok(await cache.load(keyFor(data)));
  });

  test('a foreign entry renamed to this key is rejected (key recorded inside)', async () => {
    const { data, cache, entry } = await stored();
    const other = keyFor(data, { modelSha256: 'c'.repeat(64) });
    fs.copyFileSync(entry, entryPath(cache, other));
    assert.equal(await cache.load(other), null);
    assert.equal(fs.existsSync(entryPath(cache, other)), false);
  });

  test('content changed with the same size and mtime: only the hash catches it', async () => {
    // A whole-second mtime, so that utimes can restore it exactly (a Date has only ms).
    const { data, cache } = setup();
    const sec = Math.floor(Date.now() / 1000) - 100;
    fs.utimesSync(data, sec, sec);
    const rows = await synthRows(data, 20, 4, 3, 4);
    assert.equal(await cache.store(keyFor(data), rows), true);
    assertSameRows(await cache.load(keyFor(data)), rows);
    const entry = entryPath(cache, keyFor(data));
    const before = fs.statSync(data);
    const text = fs.readFileSync(data, 'utf8');
    fs.writeFileSync(data, text.replace('4,5,6', '4,5,7'));
    fs.utimesSync(data, sec, sec);
    const after = fs.statSync(data);
    assert.equal(after.size, before.size);
    assert.equal(after.mtimeMs, before.mtimeMs);
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false, 'stale entry removed');
  });

  test('same bytes rewritten with the same mtime (new ctime): the hash confirms a hit', async () => {
    const { data, cache } = setup();
    const sec = Math.floor(Date.now() / 1000) - 100;
    fs.utimesSync(data, sec, sec);
    const rows = await synthRows(data, 20, 4, 3, 4);
    assert.equal(await cache.store(keyFor(data), rows), true);
    const before = fs.statSync(data);
    fs.writeFileSync(data, fs.readFileSync(data));
    fs.utimesSync(data, sec, sec);
    assert.notEqual(fs.statSync(data).ctimeMs, before.ctimeMs);
    assertSameRows(await cache.load(keyFor(data)), rows);
  });

  test('data file touched (mtime changed) misses', async () => {
    const { data, cache, entry } = await stored();
    const st = fs.statSync(data);
    fs.utimesSync(data, st.atime, new Date(st.mtimeMs + 5000));
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  test('data file grown misses', async () => {
    const { data, cache } = await stored();
    fs.appendFileSync(data, '2,7,8,9\n');
    assert.equal(await cache.load(keyFor(data)), null);
  });

  test('data file deleted misses', async () => {
    const { data, cache, entry } = await stored();
    fs.rmSync(data);
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  test('an aborted load throws CancelledError and keeps the entry', async () => {
    const { data, cache, entry, rows } = await stored();
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(cache.load(keyFor(data), ac.signal), CancelledError);
    assert.ok(fs.existsSync(entry));
    assertSameRows(await cache.load(keyFor(data)), rows);
  });
});

describe('corruption', () => {
  async function stored(): Promise<{ data: string; cache: RowsCache; entry: string; rows: ForwardRows }> {
    const s = setup();
    const rows = await synthRows(s.data, 50, 6, 4, 6);
    assert.equal(await s.cache.store(keyFor(s.data), rows), true);
    return { ...s, rows, entry: entryPath(s.cache, keyFor(s.data)) };
  }

  function flip(file: string, at: number): void {
    const b = fs.readFileSync(file);
    b[at < 0 ? b.length + at : at] ^= 0x20;
    fs.writeFileSync(file, b);
  }

  test('truncated by a few bytes: null, and the entry is removed', async () => {
    const { data, cache, entry } = await stored();
    fs.truncateSync(entry, fs.statSync(entry).size - 3);
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  test('truncated to the header only', async () => {
    const { data, cache, entry } = await stored();
    fs.truncateSync(entry, 30);
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  test('extra bytes appended', async () => {
    const { data, cache, entry } = await stored();
    fs.appendFileSync(entry, Buffer.alloc(8));
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  for (const [what, at] of [
    ['the magic', 2],
    ['the version', 8],
    ['the header length', 12],
    ['the header checksum', 20],
    ['the JSON header', 100],
    ['array data', -1000],
    ['the last array byte', -49],
    ['the trailer magic', -46],
    ['the trailer length', -40],
    ['the checksum', -1],
  ] as const) {
    test(`a flipped byte in ${what}: null, and the entry is removed`, async () => {
      const { data, cache, entry, rows } = await stored();
      flip(entry, at);
      assert.equal(await cache.load(keyFor(data)), null);
      assert.equal(fs.existsSync(entry), false);
      // and the next store + load works
      assert.equal(await cache.store(keyFor(data), rows), true);
      assertSameRows(await cache.load(keyFor(data)), rows);
    });
  }

  test('a JSON header edited consistently (header checksum fixed) is still caught', async () => {
    const { data, cache, entry } = await stored();
    const b = fs.readFileSync(entry);
    const J = b.readUInt32LE(12);
    const json = b.subarray(48, 48 + J).toString('utf8');
    // same length edit: a column name, which no structural check looks at
    const edited = Buffer.from(json.replace('"f0"', '"g0"'), 'utf8');
    assert.equal(edited.length, J);
    edited.copy(b, 48);
    createHash('sha256').update(edited).digest().copy(b, 16);
    fs.writeFileSync(entry, b);
    assert.equal(await cache.load(keyFor(data)), null, 'the trailer checksum covers the header');
  });

  test('garbage at the entry path: null, and removed', async () => {
    const { data, cache, entry } = await stored();
    fs.writeFileSync(entry, Buffer.from('this is not a cache entry at all, just some text\n'.repeat(10)));
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
    fs.writeFileSync(entry, '');
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });

  test('a header claiming huge arrays does not allocate them', async () => {
    const { data, cache, entry } = await stored();
    const b = fs.readFileSync(entry);
    const J = b.readUInt32LE(12);
    const h = JSON.parse(b.subarray(48, 48 + J).toString('utf8'));
    h.n = 1e12;
    const json = Buffer.from(JSON.stringify(h));
    const pre = Buffer.from(b.subarray(0, 48));
    pre.writeUInt32LE(json.length, 12);
    createHash('sha256').update(json).digest().copy(pre, 16);
    fs.writeFileSync(entry, Buffer.concat([pre, json, b.subarray(48 + J)]));
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(fs.existsSync(entry), false);
  });
});

describe('killed mid-write', () => {
  const WRITER = path.join(root, 'test/helpers/cache-writer.ts');

  function runWriter(
    dir: string,
    data: string,
    n: number,
    D: number,
    C: number,
    seed: number,
    pauseAfter?: number,
  ): Promise<{ stdout: string; code: number | null; signal: NodeJS.Signals | null; tmpSeen: string[] }> {
    return new Promise((resolve, reject) => {
      const env = { ...process.env };
      if (pauseAfter !== undefined) env.IL_CACHE_WRITER_PAUSE_AFTER = String(pauseAfter);
      else delete env.IL_CACHE_WRITER_PAUSE_AFTER;
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          WRITER,
          dir,
          data,
          MODEL,
          String(n),
          String(D),
          String(C),
          String(seed),
          JSON.stringify(keyFor(data).options),
        ],
        { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stdout = '';
      let stderr = '';
      let tmpSeen: string[] = [];
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`writer timed out; stdout=${stdout} stderr=${stderr}`));
      }, 60_000);
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (stdout.includes('PAUSED') && tmpSeen.length === 0) {
          tmpSeen = tempFiles(dir);
          child.kill('SIGKILL');
        }
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (code !== 0 && signal === null) reject(new Error(`writer failed (${code}): ${stderr}`));
        else resolve({ stdout, code, signal, tmpSeen });
      });
    });
  }

  const N = 100_000;
  const D = 20; // h = 2,000,000 floats (8 MB); the whole entry is ~11 MB

  test('a child process entry is readable here (the helper works)', async () => {
    const { dir, data, cache } = setup();
    const r = await runWriter(dir, data, 1000, 8, 3, 5);
    assert.match(r.stdout, /STORED true/);
    assertSameRows(await cache.load(keyFor(data)), await synthRows(data, 1000, 8, 3, 5));
  });

  test('no entry appears; load misses; the temp file confuses nothing; store + load work after', async () => {
    const { dir, data, cache } = setup();
    const r = await runWriter(dir, data, N, D, 4, 7, 3_000_000);
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.tmpSeen.length, 1, 'a temp file existed when the writer was killed');
    const left = tempFiles(dir);
    assert.deepEqual(left, r.tmpSeen, 'the partial temp file is left behind');
    const partial = fs.statSync(path.join(dir, left[0])).size;
    assert.ok(partial >= 3_000_000 && partial < 10_000_000, `partial size ${partial}`);
    assert.equal(fs.existsSync(entryPath(cache, keyFor(data))), false);
    assert.equal(await cache.load(keyFor(data)), null);
    const rows = await synthRows(data, 300, D, 4, 8);
    assert.equal(await cache.store(keyFor(data), rows), true);
    assertSameRows(await cache.load(keyFor(data)), rows);
    // a young temp file (another run may still be writing it) is kept ...
    assert.deepEqual(tempFiles(dir), left);
    // ... one older than an hour is swept on the next construction / store
    const old = new Date(Date.now() - 2 * 3600_000);
    fs.utimesSync(path.join(dir, left[0]), old, old);
    const later = new RowsCache(dir);
    assert.equal(await later.store(keyFor(data, { options: {} }), rows), true);
    assert.deepEqual(tempFiles(dir), []);
  });

  test('an older complete entry stays valid after a killed overwrite', async () => {
    const { dir, data, cache } = setup();
    const older = await synthRows(data, 500, D, 4, 11);
    assert.equal(await cache.store(keyFor(data), older), true);
    const r = await runWriter(dir, data, N, D, 4, 7, 3_000_000);
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.tmpSeen.length, 1);
    assertSameRows(await cache.load(keyFor(data)), older);
    // overwriting then works
    const newer = await synthRows(data, 400, D, 4, 12);
    assert.equal(await cache.store(keyFor(data), newer), true);
    assertSameRows(await cache.load(keyFor(data)), newer);
  });
});

describe('derived entries (the curvature beside its rows)', () => {
  const arrays = () => [
    Float64Array.from({ length: 7 }, (_, i) => i / 3),
    new Float64Array(0),
    Float64Array.from({ length: 3_000_000 }, (_, i) => Math.sin(i)),
  ];
  const derivedPath = (cache: RowsCache, data: string, name: string) =>
    entryPath(cache, keyFor(data)).replace(/\.ilcache$/, `.${name}.ilcache`);

  test('round-trip bit for bit, for the same data sha only', async () => {
    const { data, cache } = setup();
    const a = arrays();
    assert.equal(await cache.storeDerived(keyFor(data), 'curv', 'f'.repeat(64), a), true);
    const got = await cache.loadDerived(keyFor(data), 'curv', 'f'.repeat(64));
    assert.ok(got);
    assert.equal(got.length, a.length);
    got.forEach((g, i) => assert.ok(bytes(g).equals(bytes(a[i])), `array ${i}`));
    assert.equal(await cache.loadDerived(keyFor(data), 'other', 'f'.repeat(64)), null);
    assert.equal(await cache.loadDerived(keyFor(data, { modelSha256: 'b'.repeat(64) }), 'curv', 'f'.repeat(64)), null);
    // Rows from other data content: stale, and removed.
    assert.equal(await cache.loadDerived(keyFor(data), 'curv', 'e'.repeat(64)), null);
    assert.equal(fs.existsSync(derivedPath(cache, data, 'curv')), false);
  });

  test('a flipped byte or a truncation is caught, and the entry removed', async () => {
    const { data, cache } = setup();
    for (const damage of [
      (b: Buffer) => {
        b[b.length - 100] ^= 1;
        return b;
      },
      (b: Buffer) => b.subarray(0, b.length - 8),
    ]) {
      assert.equal(await cache.storeDerived(keyFor(data), 'curv', 'f'.repeat(64), arrays()), true);
      const file = derivedPath(cache, data, 'curv');
      fs.writeFileSync(file, damage(fs.readFileSync(file)));
      assert.equal(await cache.loadDerived(keyFor(data), 'curv', 'f'.repeat(64)), null);
      assert.equal(fs.existsSync(file), false);
    }
  });

  test('names are restricted; clear() removes derived entries too', async () => {
    const { dir, data, cache } = setup();
    assert.equal(await cache.storeDerived(keyFor(data), '../escape', 'f'.repeat(64), arrays()), false);
    assert.equal(await cache.storeDerived(keyFor(data), 'curv', 'f'.repeat(64), arrays()), true);
    assert.equal(await cache.clear(), 1);
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});

describe('memory (a long-lived engine)', () => {
  test('the last rows and their derived arrays are kept while the data file is unchanged', async () => {
    const { dir, data } = setup();
    const cache = new RowsCache(dir, { memory: true });
    const rows = await synthRows(data, 20, 4, 3, 5);
    assert.equal(await cache.store(keyFor(data), rows), true);
    assert.equal(await cache.storeDerived(keyFor(data), 'curv', rows.summary.sha256, [Float64Array.of(1, 2)]), true);
    for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
    assertSameRows(await cache.load(keyFor(data)), rows);
    assert.deepEqual(await cache.loadDerived(keyFor(data), 'curv', rows.summary.sha256), [Float64Array.of(1, 2)]);
    assert.equal(await cache.loadDerived(keyFor(data), 'curv', 'e'.repeat(64)), null);
    // Without memory, or once forgotten, only the disk counts (and it is empty now).
    assert.equal(await new RowsCache(dir).load(keyFor(data)), null);
    cache.forget();
    assert.equal(await cache.load(keyFor(data)), null);
  });

  test('a touched data file is not trusted from memory', async () => {
    const { dir, data } = setup();
    const cache = new RowsCache(dir, { memory: true });
    const rows = await synthRows(data, 20, 4, 3, 6);
    assert.equal(await cache.store(keyFor(data), rows), true);
    const st = fs.statSync(data);
    fs.utimesSync(data, st.atime, new Date(st.mtimeMs + 5000));
    assert.equal(await cache.load(keyFor(data)), null);
  });
});

describe('clear and sweep', () => {
  test('clear() removes entries and temp files, and nothing else', async () => {
    const { dir, data, cache } = setup();
    const rows = await synthRows(data, 5, 2, 2, 1);
    assert.equal(await cache.store(keyFor(data), rows), true);
    assert.equal(await cache.store(keyFor(data, { modelSha256: 'b'.repeat(64) }), rows), true);
    const hex = path.basename(entryPath(cache, keyFor(data)), '.ilcache');
    fs.writeFileSync(path.join(dir, `${hex}.123.abcdef.tmp`), 'partial');
    fs.writeFileSync(path.join(dir, 'README.txt'), 'not ours');
    assert.equal(await cache.clear(), 3);
    assert.deepEqual(fs.readdirSync(dir), ['README.txt']);
    assert.equal(await cache.load(keyFor(data)), null);
    assert.equal(await cache.clear(), 0);
    assert.equal(await new RowsCache(path.join(dir, 'missing')).clear(), 0);
  });

  test('sweepTemps() removes only old temp files', async () => {
    const { dir, data, cache } = setup();
    await cache.store(keyFor(data), await synthRows(data, 5, 2, 2, 1));
    const hex = path.basename(entryPath(cache, keyFor(data)), '.ilcache');
    const young = path.join(dir, `${hex}.1.aa.tmp`);
    const old = path.join(dir, `${hex}.2.bb.tmp`);
    fs.writeFileSync(young, 'x');
    fs.writeFileSync(old, 'x');
    const t = new Date(Date.now() - 3 * 3600_000);
    fs.utimesSync(old, t, t);
    assert.equal(await cache.sweepTemps(), 1);
    assert.ok(fs.existsSync(young));
    assert.equal(fs.existsSync(old), false);
    assert.ok(await cache.load(keyFor(data)));
  });
});

describe('defaultCacheDir', () => {
  test('honours an absolute XDG_CACHE_HOME', () => {
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '/x/cache' }), path.join('/x/cache', 'influence-lens'));
  });
  test('falls back to ~/.cache/influence-lens', () => {
    const want = path.join(os.homedir(), '.cache', 'influence-lens');
    assert.equal(defaultCacheDir({}), want);
    assert.equal(defaultCacheDir({ XDG_CACHE_HOME: '' }), want);
    assert.equal(
      defaultCacheDir({ XDG_CACHE_HOME: 'relative/dir' }),
      want,
      'relative XDG paths are ignored, per the spec',
    );
  });
  test('reads process.env by default', () => {
    const saved = process.env.XDG_CACHE_HOME;
    try {
      process.env.XDG_CACHE_HOME = path.join(tmp, 'xdg');
      assert.equal(defaultCacheDir(), path.join(tmp, 'xdg', 'influence-lens'));
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
    }
  });
});

/**
 * `npm run fuzz -- [--seed N] [--count N] [--readers csv,jsonl,onnx] [--from N] [--workers N]
 *  [--time-limit MS] [--no-minimize] [--out DIR]`
 *
 * The long fuzz run: `count` cases per reader (default 10000) from `seed` (default: from the clock,
 * printed so the run can be repeated). Prints the counts per reader and outcome and the time; every
 * bad case (failure, hang, crash) is minimized and written to `--out` (default .cache/fuzz-found)
 * with a JSON note, ready to be reviewed and moved into test/fuzz/corpus. Exits 1 on any bad case.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { READERS, type Reader } from './cases';
import { campaign, report } from './campaign';
import { briefly, minimize, signature } from './harness';

function args(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const [k, v] = a.includes('=')
      ? [a.slice(2, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]
      : [a.slice(2), argv[i + 1] && !argv[i + 1].startsWith('--') ? argv[++i] : 'true'];
    m.set(k, v);
  }
  return m;
}

function int(v: string | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer, got ${v}`);
  return n;
}

async function main(): Promise<number> {
  const a = args(process.argv.slice(2));
  const seed = int(a.get('seed'), Date.now() % 2 ** 31, 'seed');
  const count = int(a.get('count'), 10000, 'count');
  const from = int(a.get('from'), 0, 'from');
  const workers = int(a.get('workers'), 2, 'workers');
  const timeLimitMs = int(a.get('time-limit'), 15000, 'time-limit');
  const readers = (a.get('readers') ?? READERS.join(',')).split(',') as Reader[];
  for (const r of readers) if (!READERS.includes(r)) throw new Error(`unknown reader ${r}; use ${READERS.join(', ')}`);
  const out = resolve(a.get('out') ?? join(__dirname, '../../.cache/fuzz-found'));
  console.log(
    `fuzz: seed ${seed}, ${count} cases per reader (${readers.join(', ')}) from case ${from}, ${workers} processes, ${timeLimitMs} ms per case`,
  );
  const t0 = performance.now();
  const stats = await campaign({ seed, count, readers, from, workers, timeLimitMs, log: (l) => console.log(l) });
  const seconds = (performance.now() - t0) / 1000;
  console.log(`\nseed ${seed}, ${count} cases per reader, ${seconds.toFixed(1)} s in all\n${report(stats)}`);
  const bad = stats.flatMap((s) => s.bad);
  if (bad.length > 0 && a.get('no-minimize') !== 'true') {
    mkdirSync(out, { recursive: true });
    for (const b of bad) {
      if (b.spec.kind !== 'gen') continue;
      const want = signature(b.result);
      const m = await minimize(b.spec, want, {
        timeLimitMs: Math.min(timeLimitMs, 5000),
        workers,
        log: (l) => console.log(l),
      });
      const base = join(out, `${b.spec.reader}-seed${b.spec.seed}-case${b.spec.index}`);
      writeFileSync(base + m.fuzzCase.ext, m.bytes);
      // A note in the corpus's form (corpus.ts), to complete once the bug is fixed.
      const note = {
        expect: 'TODO: the outcome after the fix (ok, cancelled or an error CODE)',
        opts: m.fuzzCase.reader === 'onnx' ? undefined : m.fuzzCase.opts,
        ext: m.fuzzCase.ext,
        found: `npm run fuzz -- --seed ${b.spec.seed}: ${b.spec.reader} case ${b.spec.index} (${m.fuzzCase.name}), minimized from ${m.fuzzCase.bytes.length} to ${m.bytes.length} bytes`,
        symptom: briefly(b.result),
        fix: 'TODO',
      };
      writeFileSync(base + m.fuzzCase.ext + '.json', JSON.stringify(note, null, 2) + '\n');
      console.log(`wrote ${base}${m.fuzzCase.ext}`);
    }
  }
  return bad.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(2);
  },
);

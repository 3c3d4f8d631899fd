/**
 * `influence-lens` command line. JSON on stdout with --json; errors on stderr as
 * `error[CODE] place: message`. Exit codes: 0 ok, 1 internal error, 2 bad input, 130 cancelled.
 */
import { CancelledError, InfluenceError } from '../core/errors';
import { explain, topRows, type ExplainResult } from '../core/explain';
import { formatExplain } from './format';
import { JsonWriter } from './json';

const USAGE = `influence-lens — which training rows made an ONNX classifier say this?

Usage:
  influence-lens explain --model M.onnx --train TRAIN --test TEST --test-row K [options]

Options:
  --label-column NAME   label column (default: label)
  --features a,b,c      feature columns in model order (default: every other column)
  --classes a,b,c       class names, for string labels (default: model metadata)
  --damping X|auto      λ of the damped Hessian (default: auto)
  --top N               list only the N most helpful and N most harmful rows
  --solver cholesky|cg  force the linear solver (default: by size)
  --self-influence exact|ekfac   force the self-influence method (default: by size)
  --batch-size N        rows per ONNX Runtime batch (default: 4096)
  --json                one JSON object on stdout
  --progress            progress lines on stderr
  -h, --help            this text
`;

type Flags = Map<string, string | true>;

const VALUE_FLAGS = new Set(['model', 'train', 'test', 'test-row', 'label-column', 'features', 'classes', 'damping', 'top', 'solver', 'self-influence', 'batch-size']);
const BOOL_FLAGS = new Set(['json', 'progress', 'help']);

export function parseArgs(argv: string[]): { command: string | null; flags: Flags } {
  const flags: Flags = new Map();
  let command: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h') {
      flags.set('help', true);
      continue;
    }
    if (!a.startsWith('--')) {
      if (command === null) {
        command = a;
        continue;
      }
      throw new InfluenceError('BAD_OPTION', `unexpected argument '${a}'`);
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (BOOL_FLAGS.has(name)) {
      if (eq >= 0) throw new InfluenceError('BAD_OPTION', `--${name} takes no value`);
      flags.set(name, true);
    } else if (VALUE_FLAGS.has(name)) {
      const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new InfluenceError('BAD_OPTION', `--${name} needs a value`);
      flags.set(name, v);
    } else {
      throw new InfluenceError('BAD_OPTION', `unknown option --${name}; see --help`);
    }
  }
  return { command, flags };
}

function str(flags: Flags, name: string): string | undefined {
  const v = flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

function required(flags: Flags, name: string): string {
  const v = str(flags, name);
  if (v === undefined) throw new InfluenceError('BAD_OPTION', `--${name} is required`);
  return v;
}

function int(flags: Flags, name: string, min: number): number | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min) throw new InfluenceError('BAD_OPTION', `--${name} must be an integer ≥ ${min}; got '${v}'`);
  return n;
}

function list(flags: Flags, name: string): string[] | undefined {
  const v = str(flags, name);
  return v === undefined ? undefined : v.split(',').map((s) => s.trim());
}

function damping(flags: Flags): number | 'auto' {
  const v = str(flags, 'damping') ?? 'auto';
  if (v === 'auto') return 'auto';
  const x = Number(v);
  if (!(x > 0) || !Number.isFinite(x)) throw new InfluenceError('BAD_OPTION', `--damping must be a positive number or 'auto'; got '${v}'`);
  return x;
}

function oneOf<T extends string>(flags: Flags, name: string, allowed: readonly T[]): T | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw new InfluenceError('BAD_OPTION', `--${name} must be one of ${allowed.join(', ')}; got '${v}'`);
  return v as T;
}

async function writeExplainJson(w: JsonWriter, r: ExplainResult, top: number | undefined): Promise<void> {
  const s = r.scores;
  const n = r.train.rows;
  const ranked = topRows(s.lossChangeIfRemoved, top ?? n);
  await w.raw('{"version":1');
  await w.field('model', r.model);
  await w.field('classes', r.classes);
  await w.field('damping', r.damping);
  await w.field('dampingRule', r.dampingRule);
  await w.field('solver', r.solver);
  await w.field('selfInfluenceMethod', r.selfInfluenceMethod);
  await w.field('cgIterations', r.cgIterations);
  await w.field('train', r.train);
  await w.field('test', r.test);
  await w.field('helpful', ranked.helpful);
  await w.field('harmful', ranked.harmful);
  let listed: Iterable<number>;
  if (top === undefined) listed = Array.from({ length: n }, (_, i) => i);
  else listed = [...ranked.helpful, ...ranked.harmful].sort((a, b) => a - b);
  await w.raw(',"scores":[');
  let first = true;
  for (const i of listed) {
    await w.raw(
      (first ? '' : ',') +
        JSON.stringify({
          row: i,
          line: r.rows.line[i],
          label: r.rows.label[i],
          predicted: r.rows.predicted[i],
          loss: r.rows.loss[i],
          influence: s.influence[i],
          lossChangeIfRemoved: s.lossChangeIfRemoved[i],
          lossChangeIfRemovedNewton: s.lossChangeIfRemovedNewton[i],
          selfInfluence: s.selfInfluence[i],
          relativeInfluence: s.relativeInfluence[i],
          classificationInfluence: s.classificationInfluence[i],
        }),
    );
    first = false;
  }
  await w.raw(']');
  await w.field('flip', s.flip);
  await w.field('seconds', r.seconds);
  await w.raw('}\n');
  await w.end();
}

export async function main(argv: string[], signal: AbortSignal): Promise<number> {
  const { command, flags } = parseArgs(argv);
  if (flags.has('help') || command === null) {
    process.stdout.write(USAGE);
    return command === null && !flags.has('help') ? 2 : 0;
  }
  const onProgress = flags.has('progress')
    ? (stage: string, done: number, total: number) => process.stderr.write(JSON.stringify({ progress: stage, done, total }) + '\n')
    : undefined;
  if (command === 'explain') {
    const testRow = int(flags, 'test-row', 0);
    if (testRow === undefined) throw new InfluenceError('BAD_OPTION', '--test-row is required');
    const top = int(flags, 'top', 1);
    const result = await explain({
      model: required(flags, 'model'),
      train: required(flags, 'train'),
      test: required(flags, 'test'),
      testRow,
      table: { labelColumn: str(flags, 'label-column'), features: list(flags, 'features'), classes: list(flags, 'classes') },
      damping: damping(flags),
      solver: oneOf(flags, 'solver', ['cholesky', 'cg'] as const),
      selfInfluence: oneOf(flags, 'self-influence', ['exact', 'ekfac'] as const),
      batchSize: int(flags, 'batch-size', 1),
      signal,
      onProgress,
    });
    if (flags.has('json')) await writeExplainJson(new JsonWriter(process.stdout), result, top);
    else process.stdout.write(formatExplain(result, top ?? 10));
    return 0;
  }
  throw new InfluenceError('BAD_OPTION', `unknown command '${command}'; see --help`);
}

export function run(): void {
  const ac = new AbortController();
  let interrupts = 0;
  process.on('SIGINT', () => {
    if (++interrupts > 1) process.exit(130);
    ac.abort();
  });
  process.on('SIGTERM', () => ac.abort());
  // A closed pipe (`| head`) is the reader's choice, not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  main(process.argv.slice(2), ac.signal).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      if (e instanceof InfluenceError) {
        process.stderr.write(e.format() + '\n');
        process.exitCode = 2;
      } else if (e instanceof CancelledError || ac.signal.aborted) {
        process.stderr.write('cancelled\n');
        process.exitCode = 130;
      } else {
        process.stderr.write(`internal error: ${(e as Error)?.stack ?? String(e)}\n`);
        process.exitCode = 1;
      }
    },
  );
}

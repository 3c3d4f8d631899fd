/**
 * `influence-lens` command line. JSON on stdout with --json; errors on stderr as
 * `error[CODE] place: message`. Exit codes: 0 ok, 1 internal error, 2 bad input, 130 cancelled.
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CancelledError,
  defaultCacheDir,
  explain,
  InfluenceError,
  RowsCache,
  topRows,
  type ExplainResult,
} from '../core';
import {
  agreementFrom,
  cacheFrom,
  damping,
  headOptions,
  IMAGE_FLAGS,
  int,
  layersFrom,
  list,
  oneOf,
  parseArgs,
  required,
  str,
} from './args';
import { auditCommand, cleanCommand } from './audit';
import { formatExplain, printNotes, printWarnings } from './format';
import { jsonText, JsonWriter } from './json';
import { IMAGE_USAGE, imageRequest, rowWhere, shown } from './images';

const USAGE = `influence-lens — which training rows made an ONNX classifier say this?

Usage:
  influence-lens explain --model M.onnx --train TRAIN --test TEST --test-row K [options]
  influence-lens audit   --model M.onnx --train TRAIN [--validation V | --test T] [options]
  influence-lens clean   --model M.onnx --train TRAIN --validation V --remove SPEC --out NEW [--verify]
  influence-lens cache clear [--cache-dir DIR]

Options:
  --output NAME         the model output to explain (default: the logits behind the final linear layer)
  --label-column NAME   label column (default: label, else the one named target, class, y or labels)
  --features a,b,c      feature columns in model order (default: every other column)
  --ignore-columns a,b  columns that are not features (an index or id column is skipped without it
                        when the other columns then match the model)
  --classes a,b,c       class names, for string labels (default: model metadata, else the sorted labels)
  --damping X|auto|trace|implied   λ of the damped Hessian (default: auto)
  --head shipped|refit  score the head as given, or refit to the optimum of the damped objective
  --no-stability        skip the comparison of the top rows at λ/10 and 10λ
  --top N               list only the N most helpful and N most harmful rows
  --solver cholesky|cg  force the linear solver (default: by size)
  --self-influence exact|ekfac   force the self-influence method (default: by size)
  --batch-size N        rows per ONNX Runtime batch (default: 4096)
  --verify-top K        explain: refit without each of the top K rows and show the actual change
  --layers head|K|all|a,b   explain, audit, clean: the layers influence is taken over: the head
                        (default), the last K parameterized layers, all of them, or layers by node name
  --curvature exact|ekfac   beyond the head: the exact damped Gauss–Newton matrix (default up to 5,000
                        parameters) or EK-FAC per layer
  --agreement, --no-agreement   explain and audit: compare the head's answer with the last 2 layers'
                        (or, with deeper --layers, explain's with the head's) always, or never
                        (default: explain always; audit when it is cheap, about 10 s)
  --tau X               audit: a memorized row's held-out influence is ≥ −X (default: 0)
  --remove SPEC         clean: memorized | top:K (most suspicious) | rows:1,5,9 (0-based)
  --out FILE            clean: the new data file (never an input)
  --verify              clean: refit with and without the rows and report the actual change
  --cache-dir DIR       where forward results are cached (default: $XDG_CACHE_HOME/influence-lens)
  --no-cache            neither read nor write the cache
  --json                one JSON object on stdout
  --progress            progress lines on stderr
  -h, --help            this text

${IMAGE_USAGE}`;

async function writeExplainJson(w: JsonWriter, r: ExplainResult, top: number | undefined): Promise<void> {
  const s = r.scores;
  const n = r.train.rows;
  const ranked = topRows(s.lossChangeIfRemoved, top ?? n);
  await w.raw('{"version":1');
  await w.field('model', r.model);
  await w.field('layers', r.layers);
  await w.field('curvature', r.curvature);
  await w.field('headOnly', r.headOnly);
  await w.field('notes', r.notes);
  await w.field('warnings', r.warnings);
  await w.field('labelColumn', r.labelColumn);
  await w.field('classes', r.classes);
  await w.field('damping', r.damping);
  await w.field('dampingRule', r.dampingRule);
  await w.field('impliedL2', r.impliedL2);
  await w.field('head', r.head);
  await w.field('stability', r.stability);
  await w.field('agreement', r.agreement);
  await w.field('solver', r.solver);
  await w.field('selfInfluenceMethod', r.selfInfluenceMethod);
  await w.field('cgIterations', r.cgIterations);
  await w.field('train', r.train);
  await w.field('test', r.test.file !== undefined ? { ...r.test, file: shown(r.test.file) } : r.test);
  if (r.preprocess) await w.field('preprocess', r.preprocess);
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
        jsonText({
          row: i,
          ...rowWhere(r.rows.line[i], r.rows.locator, i),
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
  await w.field('verified', r.verified);
  await w.field('seconds', r.seconds);
  await w.raw('}\n');
  await w.end();
}

const TABLE_FLAGS = [
  'model',
  'output',
  'head',
  'no-stability',
  'train',
  'label-column',
  'features',
  'ignore-columns',
  'classes',
  'damping',
  'solver',
  'self-influence',
  'batch-size',
  'cache-dir',
  'no-cache',
  ...IMAGE_FLAGS,
];
const COMMON_FLAGS = ['json', 'progress', 'help'];
/** explain's and audit's flags beyond the head. */
const DEEP_FLAGS = ['layers', 'curvature', 'agreement', 'no-agreement'];
const COMMAND_FLAGS: Record<string, string[]> = {
  explain: [...TABLE_FLAGS, 'test', 'test-row', 'top', 'verify-top', ...DEEP_FLAGS],
  audit: [...TABLE_FLAGS, 'validation', 'test', 'tau', ...DEEP_FLAGS],
  clean: [...TABLE_FLAGS, 'validation', 'tau', 'remove', 'out', 'verify', 'layers', 'curvature'],
  cache: ['cache-dir'],
};

export async function main(argv: string[], signal: AbortSignal): Promise<number> {
  const { command, args, flags } = parseArgs(argv);
  if (flags.has('help') || command === null) {
    process.stdout.write(USAGE);
    return command === null && !flags.has('help') ? 2 : 0;
  }
  const onProgress = flags.has('progress')
    ? (stage: string, done: number, total: number) =>
        process.stderr.write(JSON.stringify({ progress: stage, done, total }) + '\n')
    : undefined;
  const allowed = COMMAND_FLAGS[command];
  if (!allowed) throw new InfluenceError('BAD_OPTION', `unknown command '${command}'; see --help`);
  for (const name of flags.keys()) {
    if (!allowed.includes(name) && !COMMON_FLAGS.includes(name))
      throw new InfluenceError('BAD_OPTION', `--${name} is not an option of ${command}; see --help`);
  }
  if (command !== 'cache' && args.length) throw new InfluenceError('BAD_OPTION', `unexpected argument '${args[0]}'`);
  if (command === 'cache') {
    if (args.length !== 1 || args[0] !== 'clear')
      throw new InfluenceError('BAD_OPTION', `usage: influence-lens cache clear [--cache-dir DIR]`);
    const cache = new RowsCache(str(flags, 'cache-dir') ?? defaultCacheDir());
    const removed = await cache.clear();
    process.stdout.write(
      flags.has('json')
        ? JSON.stringify({ version: 1, cleared: removed, dir: cache.dir }) + '\n'
        : `Removed ${removed} cache files from ${cache.dir}.\n`,
    );
    return 0;
  }
  if (command === 'audit') return auditCommand(flags, signal, onProgress).then(() => 0);
  if (command === 'clean') return cleanCommand(flags, signal, onProgress).then(() => 0);
  if (command === 'explain') {
    const testRow = int(flags, 'test-row', 0);
    if (testRow === undefined) throw new InfluenceError('BAD_OPTION', '--test-row is required');
    const top = int(flags, 'top', 1);
    const result = await explain({
      model: required(flags, 'model'),
      output: str(flags, 'output'),
      train: required(flags, 'train'),
      test: required(flags, 'test'),
      testRow,
      table: {
        labelColumn: str(flags, 'label-column'),
        features: list(flags, 'features'),
        ignoreColumns: list(flags, 'ignore-columns'),
        classes: list(flags, 'classes'),
      },
      images: imageRequest(flags),
      damping: damping(flags),
      ...headOptions(flags),
      stabilityTop: top ?? 10,
      solver: oneOf(flags, 'solver', ['cholesky', 'cg'] as const),
      selfInfluence: oneOf(flags, 'self-influence', ['exact', 'ekfac'] as const),
      batchSize: int(flags, 'batch-size', 1),
      verifyTop: int(flags, 'verify-top', 1),
      layers: layersFrom(flags),
      curvature: oneOf(flags, 'curvature', ['exact', 'ekfac'] as const),
      agreement: agreementFrom(flags),
      cache: cacheFrom(flags),
      signal,
      onProgress,
    });
    printNotes(result.notes);
    printWarnings(result.warnings);
    if (flags.has('json')) await writeExplainJson(new JsonWriter(process.stdout), result, top);
    else process.stdout.write(formatExplain(result, top ?? 10));
    return 0;
  }
  throw new InfluenceError('BAD_OPTION', `unknown command '${command}'; see --help`);
}

function firstLine(e: unknown): string {
  return ((e as Error)?.message ?? String(e)).split('\n')[0];
}

/** Writes an unexpected error's whole story to a log file for a bug report, and returns its path. */
function crashLog(e: unknown): string {
  const file = join(tmpdir(), `influence-lens-crash-${process.pid}-${Date.now()}.log`);
  try {
    writeFileSync(file, `influence-lens ${process.argv.slice(2).join(' ')}\n\n${(e as Error)?.stack ?? String(e)}\n`);
    return file;
  } catch {
    return 'no log: the temporary directory is not writable';
  }
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
  main(process.argv.slice(2), ac.signal)
    .then(
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
          process.stderr.write(`internal error: ${firstLine(e)} (details in ${crashLog(e)})\n`);
          process.exitCode = 1;
        }
      },
    )
    .then(() => {
      // Exit once stdout is flushed, rather than waiting for the event loop to drain: a CI run once
      // hung after an audit with onnxruntime's threads idle in a futex wait.
      process.stdout.write('', () => process.exit(process.exitCode));
    });
}

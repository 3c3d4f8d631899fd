/** Command-line flags: a small strict parser, so every typo is a clear BAD_OPTION error. */
import {
  defaultCacheDir,
  InfluenceError,
  parseLayerSpec,
  RowsCache,
  type DampingOption,
  type LayerSpec,
  type RemoveSpec,
} from '../core';

export type Flags = Map<string, string | true>;

/** The value flags that images.ts reads. */
export const IMAGE_FLAGS = [
  'image-column',
  'preprocess',
  'resize',
  'center-crop',
  'scale',
  'mean',
  'std',
  'channels',
  'layout',
  'exif',
];
const VALUE_FLAGS = new Set([
  'model',
  'output',
  'head',
  'train',
  'test',
  'validation',
  'test-row',
  'label-column',
  'features',
  'ignore-columns',
  'classes',
  'damping',
  'top',
  'solver',
  'self-influence',
  'batch-size',
  'tau',
  'remove',
  'out',
  'verify-top',
  'cache-dir',
  'layers',
  'curvature',
  ...IMAGE_FLAGS,
]);
const BOOL_FLAGS = new Set([
  'json',
  'progress',
  'help',
  'verify',
  'no-cache',
  'no-stability',
  'agreement',
  'no-agreement',
]);

export function parseArgs(argv: string[]): { command: string | null; args: string[]; flags: Flags } {
  const flags: Flags = new Map();
  let command: string | null = null;
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h') {
      flags.set('help', true);
      continue;
    }
    if (!a.startsWith('--')) {
      if (command === null) command = a;
      else args.push(a);
      continue;
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
  return { command, args, flags };
}

export function str(flags: Flags, name: string): string | undefined {
  const v = flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

export function required(flags: Flags, name: string): string {
  const v = str(flags, name);
  if (v === undefined) throw new InfluenceError('BAD_OPTION', `--${name} is required`);
  return v;
}

export function int(flags: Flags, name: string, min: number): number | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min)
    throw new InfluenceError('BAD_OPTION', `--${name} must be an integer ≥ ${min}; got '${v}'`);
  return n;
}

export function list(flags: Flags, name: string): string[] | undefined {
  const v = str(flags, name);
  return v === undefined ? undefined : v.split(',').map((s) => s.trim());
}

export function damping(flags: Flags): DampingOption {
  const v = str(flags, 'damping') ?? 'auto';
  if (v === 'auto' || v === 'trace' || v === 'implied') return v;
  const x = Number(v);
  if (!(x > 0) || !Number.isFinite(x))
    throw new InfluenceError(
      'BAD_OPTION',
      `--damping must be a positive number or one of auto, trace, implied; got '${v}'`,
    );
  return x;
}

/** The options every scoring command shares: the head scored and the stability check. */
export function headOptions(flags: Flags): { head?: 'shipped' | 'refit'; stability: boolean } {
  return { head: oneOf(flags, 'head', ['shipped', 'refit'] as const), stability: !flags.has('no-stability') };
}

export function oneOf<T extends string>(flags: Flags, name: string, allowed: readonly T[]): T | undefined {
  const v = str(flags, name);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v))
    throw new InfluenceError('BAD_OPTION', `--${name} must be one of ${allowed.join(', ')}; got '${v}'`);
  return v as T;
}

/** `--layers head|K|all|name1,name2` (default: the head). */
export function layersFrom(flags: Flags): LayerSpec | undefined {
  const v = str(flags, 'layers');
  return v === undefined ? undefined : parseLayerSpec(v);
}

/** `--agreement` (always compare with the other layers), `--no-agreement` (never), else the command's default. */
export function agreementFrom(flags: Flags): boolean | undefined {
  if (flags.has('agreement') && flags.has('no-agreement'))
    throw new InfluenceError('BAD_OPTION', '--agreement and --no-agreement contradict each other');
  return flags.has('no-agreement') ? false : flags.has('agreement') ? true : undefined;
}

/** The cache the flags ask for: --no-cache, --cache-dir DIR, or the default location. */
export function cacheFrom(flags: Flags): RowsCache | null {
  if (flags.has('no-cache')) return null;
  return new RowsCache(str(flags, 'cache-dir') ?? defaultCacheDir());
}

/** `--remove memorized | top:K | rows:1,5,9`. */
export function parseRemoveSpec(text: string): RemoveSpec {
  if (text === 'memorized') return { kind: 'memorized' };
  const top = /^top:(\d+)$/.exec(text);
  if (top) {
    const k = Number(top[1]);
    if (k < 1) throw new InfluenceError('BAD_OPTION', `--remove top:K needs K ≥ 1; got '${text}'`);
    return { kind: 'top', k };
  }
  const rows = /^rows:(.*)$/.exec(text);
  if (rows) {
    const parts = rows[1].split(',').map((s) => s.trim());
    if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
      throw new InfluenceError(
        'BAD_OPTION',
        `--remove rows: takes 0-based row numbers separated by commas, e.g. rows:1,5,9; got '${text}'`,
      );
    }
    return { kind: 'rows', rows: [...new Set(parts.map(Number))].sort((a, b) => a - b) };
  }
  throw new InfluenceError('BAD_OPTION', `--remove must be memorized, top:K or rows:1,5,9; got '${text}'`);
}

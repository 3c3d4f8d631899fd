/**
 * Image preprocessing as torchvision does it, with torchvision's defaults unless configured:
 * decode (EXIF orientation ignored unless asked), convert to grey or RGB, optionally resize
 * (bilinear, Pillow's antialiased kernel; an exact size, or the shorter side as `Resize(n)`) and
 * center-crop, scale the 0–255 levels (ToTensor: 1/255), normalize per channel ((x − mean) / std),
 * and lay out as the model's input wants (RGB or BGR; NCHW or NHWC; or flat).
 *
 * The configuration comes, field by field, from the first of: the model's metadata
 * `influence_lens.preprocess` (JSON), a `preprocess.json` beside the model, then the settings / the
 * command line's flags; what none sets has torchvision's default. The arithmetic is float64,
 * rounded once to the model's input type.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { InfluenceError } from '../../errors';
import { orient, toGrey, toRgb, type Decoded } from './pixels';
import { centerCrop, resizeBilinear, shorterSideSize } from './resize';

/** A size: [height, width], a square side, or the model's input size. */
export type SizeSpec = [number, number] | number | 'model';

/** What can be configured (every field optional). */
export interface PreprocessConfig {
  /** Resize first: to [h, w], the shorter side to n (then usually `centerCrop`), or the model's size. Default: none (every image must already have the model's size). */
  resize?: SizeSpec | null;
  /** Then cut the centre: [h, w], n×n, or the model's size. Default: none. */
  centerCrop?: SizeSpec | null;
  /** Only bilinear (Pillow's, antialiased). */
  interpolation?: 'bilinear';
  /** The 0–255 levels are multiplied by this (ToTensor: 1/255, the default). */
  scale?: number;
  /** Per channel, in the order fed to the model (one value: every channel). Default 0 and 1. */
  mean?: number[];
  std?: number[];
  /** The channels fed to the model. Default: grey for one channel, RGB for three. */
  channels?: 'rgb' | 'bgr' | 'grey';
  /** The input's layout. Default: from the model's input shape (NCHW when it cannot tell). */
  layout?: 'nchw' | 'nhwc';
  /** EXIF orientation: apply it (Hugging Face datasets), ignore it (torchvision), or auto (default): apply for Hugging Face Parquet image columns only. */
  exif?: 'apply' | 'ignore' | 'auto';
}

export type Field = keyof PreprocessConfig;
export const FIELDS: Field[] = [
  'resize',
  'centerCrop',
  'interpolation',
  'scale',
  'mean',
  'std',
  'channels',
  'layout',
  'exif',
];
export type ConfigSource = 'model metadata' | 'preprocess.json' | 'settings or flags' | 'default';

/** The resolved pipeline: plain data (it is sent to the decoding threads). */
export interface Pipeline {
  /** The model input's image size, or null for a flat input whose size comes from the images. */
  height: number | null;
  width: number | null;
  /** Feature count F of one image. */
  features: number;
  /** Channels fed to the model; null: a flat input decides per image (grey when w·h = F, RGB when 3·w·h = F). */
  channels: 'rgb' | 'bgr' | 'grey' | null;
  layout: 'nchw' | 'nhwc';
  resize: { kind: 'exact'; height: number; width: number } | { kind: 'shorter'; size: number } | null;
  crop: { height: number; width: number } | null;
  scale: number;
  mean: number[];
  std: number[];
  exif: 'apply' | 'ignore' | 'auto';
  float64: boolean;
  /** Where each field came from. */
  from: Record<Field, ConfigSource>;
  /** The model input, for messages: [batch, ...dims]. */
  input: string;
}

function bad(message: string, file?: string): InfluenceError {
  return new InfluenceError('PREPROCESS_INVALID', message, file ? { file } : {});
}

const posInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x > 0;

function sizeSpec(v: unknown, name: string, where: string, file?: string): SizeSpec | null {
  if (v === null || v === undefined) return null;
  if (v === 'model') return 'model';
  if (posInt(v)) return v;
  if (typeof v === 'string') {
    const m = /^\s*(\d+)\s*[x×]\s*(\d+)\s*$/i.exec(v);
    if (m && Number(m[1]) > 0 && Number(m[2]) > 0) return [Number(m[1]), Number(m[2])];
    if (/^\s*\d+\s*$/.test(v) && Number(v) > 0) return Number(v);
  }
  if (Array.isArray(v) && v.length === 2 && posInt(v[0]) && posInt(v[1])) return [v[0], v[1]];
  throw bad(
    `${where}: ${name} must be "model", a positive integer (the shorter side, or a square crop) or [height, width]; got ${JSON.stringify(v)}`,
    file,
  );
}

function numbers(v: unknown, name: string, where: string, positive: boolean, file?: string): number[] {
  const list = typeof v === 'number' ? [v] : typeof v === 'string' ? v.split(',').map((s) => Number(s.trim())) : v;
  if (
    !Array.isArray(list) ||
    list.length === 0 ||
    list.some((x) => typeof x !== 'number' || !Number.isFinite(x) || (positive && !(x > 0)))
  ) {
    throw bad(
      `${where}: ${name} must be a list of ${positive ? 'positive ' : ''}numbers (one, or one per channel); got ${JSON.stringify(v)}`,
      file,
    );
  }
  return list as number[];
}

/** Checks a configuration object from metadata, a file, settings or flags; `where` names it in errors. */
export function parsePreprocess(raw: unknown, where: string, file?: string): PreprocessConfig {
  if (raw === null || raw === undefined) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw bad(`${where} must be a JSON object`, file);
  const r = raw as Record<string, unknown>;
  const out: PreprocessConfig = {};
  for (const key of Object.keys(r)) {
    if (key === 'note' || key === 'notes' || key === '$comment') continue;
    if (!(FIELDS as string[]).includes(key))
      throw bad(`${where}: unknown field ${JSON.stringify(key)}; the fields are ${FIELDS.join(', ')}`, file);
  }
  const oneOf = <T extends string>(key: string, allowed: readonly T[]): T | undefined => {
    const v = r[key];
    if (v === undefined || v === null) return undefined;
    const s = typeof v === 'string' ? v.toLowerCase() : v;
    if (!(allowed as readonly unknown[]).includes(s))
      throw bad(`${where}: ${key} must be one of ${allowed.join(', ')}; got ${JSON.stringify(v)}`, file);
    return s as T;
  };
  if ('resize' in r) out.resize = sizeSpec(r.resize, 'resize', where, file);
  if ('centerCrop' in r) out.centerCrop = sizeSpec(r.centerCrop, 'centerCrop', where, file);
  const interp = oneOf('interpolation', ['bilinear'] as const);
  if (interp) out.interpolation = interp;
  if (r.scale !== undefined && r.scale !== null) {
    const s = typeof r.scale === 'string' ? Number(r.scale) : r.scale;
    if (typeof s !== 'number' || !(s > 0) || !Number.isFinite(s))
      throw bad(`${where}: scale must be a positive number; got ${JSON.stringify(r.scale)}`, file);
    out.scale = s;
  }
  if (r.mean !== undefined && r.mean !== null) out.mean = numbers(r.mean, 'mean', where, false, file);
  if (r.std !== undefined && r.std !== null) out.std = numbers(r.std, 'std', where, true, file);
  const ch = oneOf('channels', ['rgb', 'bgr', 'grey', 'gray', 'l'] as const);
  if (ch) out.channels = ch === 'gray' || ch === 'l' ? 'grey' : ch;
  const layout = oneOf('layout', ['nchw', 'nhwc'] as const);
  if (layout) out.layout = layout;
  const exif = oneOf('exif', ['apply', 'ignore', 'auto'] as const);
  if (exif) out.exif = exif;
  return out;
}

/** The model facts the pipeline depends on. */
export interface ModelInput {
  path: string;
  inputDims: number[];
  F: number;
  float64: boolean;
  /** The metadata value `influence_lens.preprocess`, if any. */
  metadata: string | undefined;
}

/** The three layers of configuration with their sources, highest precedence first. */
export function configLayers(
  model: ModelInput,
  request: PreprocessConfig | undefined,
): { layers: { source: ConfigSource; config: PreprocessConfig }[]; file: string | null } {
  const layers: { source: ConfigSource; config: PreprocessConfig }[] = [];
  if (model.metadata !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(model.metadata);
    } catch {
      throw bad(`the model's metadata influence_lens.preprocess is not JSON`, model.path);
    }
    layers.push({
      source: 'model metadata',
      config: parsePreprocess(parsed, 'the model metadata influence_lens.preprocess', model.path),
    });
  }
  const file = join(dirname(model.path), 'preprocess.json');
  let used: string | null = null;
  if (existsSync(file)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw bad(`not valid JSON: ${(e as Error).message}`, file);
    }
    layers.push({ source: 'preprocess.json', config: parsePreprocess(parsed, 'preprocess.json', file) });
    used = file;
  }
  if (request) layers.push({ source: 'settings or flags', config: request });
  return { layers, file: used };
}

/**
 * The pipeline for a model: each field from the first layer that sets it. Returns notes on flags
 * or settings that a higher layer overrides.
 */
export function resolvePipeline(
  model: ModelInput,
  request?: PreprocessConfig,
): { pipeline: Pipeline; notes: string[] } {
  const { layers } = configLayers(model, request);
  const from = {} as Record<Field, ConfigSource>;
  const cfg: PreprocessConfig = {};
  const notes: string[] = [];
  for (const f of FIELDS) {
    from[f] = 'default';
    for (const l of layers) {
      if (l.config[f] === undefined) continue;
      if (from[f] === 'default') {
        (cfg as Record<string, unknown>)[f] = l.config[f];
        from[f] = l.source;
      } else if (l.source === 'settings or flags' && JSON.stringify(l.config[f]) !== JSON.stringify(cfg[f])) {
        notes.push(
          `the preprocessing's ${f} ${JSON.stringify(l.config[f])} from the settings or flags is not used: the ${from[f]} sets it to ${JSON.stringify(cfg[f])}`,
        );
      }
    }
  }
  const dims = model.inputDims;
  const input = `[batch, ${dims.join(', ')}]`;
  const where = model.path;
  let height: number | null = null;
  let width: number | null = null;
  let modelChannels: number | null = null;
  let layout: 'nchw' | 'nhwc' = cfg.layout ?? 'nchw';
  const isCh = (d: number) => d === 1 || d === 3;
  if (dims.length === 3) {
    const first = isCh(dims[0]);
    const last = isCh(dims[2]);
    if (!cfg.layout) layout = first ? 'nchw' : last ? 'nhwc' : 'nchw';
    if (layout === 'nchw' ? !first : !last) {
      throw bad(`the model input ${input} is not an image of 1 or 3 channels in ${layout.toUpperCase()} layout`, where);
    }
    [modelChannels, height, width] = layout === 'nchw' ? [dims[0], dims[1], dims[2]] : [dims[2], dims[0], dims[1]];
  } else if (dims.length === 2) {
    [height, width] = dims;
    modelChannels = 1;
  } else if (dims.length !== 1) {
    throw bad(
      `the model input ${input} is not an image input ([batch, C, H, W], [batch, H, W, C], [batch, H, W] or flat [batch, F])`,
      where,
    );
  }
  const F = model.F;
  let channels: Pipeline['channels'] = cfg.channels ?? null;
  if (modelChannels === 1) {
    if (channels && channels !== 'grey')
      throw bad(`channels ${channels} does not fit the model input ${input}, which takes one channel`, where);
    channels = 'grey';
  } else if (modelChannels === 3) {
    if (channels === 'grey')
      throw bad(`channels grey does not fit the model input ${input}, which takes three channels`, where);
    channels ??= 'rgb';
  }
  // A flat input: its image size is the resize or crop target when there is one.
  const squareOf = (c: number): number | null => {
    const s = Math.round(Math.sqrt(F / c));
    return s * s * c === F ? s : null;
  };
  // A flat input that only a grey (or only an RGB) square image fills has that many channels.
  if (channels === null && modelChannels === null && (squareOf(1) === null) !== (squareOf(3) === null))
    channels = squareOf(1) !== null ? 'grey' : 'rgb';
  const nc = channels === null ? null : channels === 'grey' ? 1 : 3;
  const modelSize = (what: string): [number, number] => {
    if (height !== null && width !== null) return [height, width];
    const s = nc !== null ? squareOf(nc) : (squareOf(1) ?? squareOf(3));
    if (s === null)
      throw bad(
        `${what} "model" needs the model's image size, but its flat input ${input} is not a square image; give [height, width]`,
        where,
      );
    return [s, s];
  };
  const hw = (spec: SizeSpec, what: string): [number, number] =>
    spec === 'model' ? modelSize(what) : typeof spec === 'number' ? [spec, spec] : spec;
  let resize: Pipeline['resize'] = null;
  if (cfg.resize !== undefined && cfg.resize !== null) {
    resize =
      typeof cfg.resize === 'number'
        ? { kind: 'shorter', size: cfg.resize }
        : (([h, w]) => ({ kind: 'exact' as const, height: h, width: w }))(hw(cfg.resize, 'resize'));
  }
  const crop =
    cfg.centerCrop !== undefined && cfg.centerCrop !== null
      ? (([h, w]) => ({ height: h, width: w }))(hw(cfg.centerCrop, 'centerCrop'))
      : null;
  if (height === null) {
    const target = crop ?? (resize?.kind === 'exact' ? resize : null);
    if (target) {
      height = target.height;
      width = target.width;
      const c = F / (height * width);
      if (c !== 1 && c !== 3)
        throw bad(
          `the model's flat input ${input} does not hold ${height}×${width} images (grey: ${height * width} features, RGB: ${3 * height * width})`,
          where,
        );
      if (channels === null) channels = c === 1 ? 'grey' : 'rgb';
      else if ((channels === 'grey' ? 1 : 3) !== c)
        throw bad(`channels ${channels} at ${height}×${width} do not give the model's ${F} features`, where);
    }
  }
  const nOut = channels === null ? null : channels === 'grey' ? 1 : 3;
  const mean = cfg.mean ?? [0];
  const std = cfg.std ?? [1];
  for (const [name, v] of [
    ['mean', mean],
    ['std', std],
  ] as const) {
    if (v.length !== 1 && nOut !== null && v.length !== nOut)
      throw bad(`${name} has ${v.length} values but the model takes ${nOut} channel${nOut === 1 ? '' : 's'}`, where);
    if (v.length !== 1 && v.length !== 3 && nOut === null) throw bad(`${name} needs one value or three`, where);
  }
  const pipeline: Pipeline = {
    height,
    width,
    features: F,
    channels,
    layout,
    resize,
    crop,
    scale: cfg.scale ?? 1 / 255,
    mean,
    std,
    exif: cfg.exif ?? 'auto',
    float64: model.float64,
    from,
    input,
  };
  return { pipeline, notes };
}

/** The pipeline in words, one step each (for the JSON and the panel). */
export function describePipeline(p: Pipeline, hfImages = false): string[] {
  const steps: string[] = [];
  const exifApplied = p.exif === 'apply' || (p.exif === 'auto' && hfImages);
  steps.push(
    `decode (PNG, JPEG, BMP, WebP; Pillow's values); EXIF orientation ${exifApplied ? 'applied (as Hugging Face datasets does)' : 'ignored (as torchvision does)'}`,
  );
  const ch =
    p.channels === null
      ? "grey or RGB (whichever gives the model's features)"
      : p.channels === 'grey'
        ? 'grey (Pillow convert("L"))'
        : 'RGB (Pillow convert("RGB"), alpha dropped)';
  steps.push(`convert to ${ch}`);
  if (p.resize?.kind === 'exact')
    steps.push(`resize to ${p.resize.height}×${p.resize.width} (bilinear, antialiased, as Pillow)`);
  if (p.resize?.kind === 'shorter')
    steps.push(
      `resize the shorter side to ${p.resize.size} (bilinear, antialiased; the longer side truncated, as torchvision Resize(${p.resize.size}))`,
    );
  if (p.crop) steps.push(`center-crop to ${p.crop.height}×${p.crop.width} (as torchvision CenterCrop)`);
  if (!p.resize && !p.crop)
    steps.push(
      p.height !== null
        ? `no resize: every image must be ${p.height}×${p.width}`
        : `no resize: every image must give the model's ${p.features} features`,
    );
  steps.push(
    p.scale === 1 / 255 ? 'scale the levels by 1/255 (to [0, 1], as ToTensor)' : `scale the levels by ${p.scale}`,
  );
  const isDefault = p.mean.every((m) => m === 0) && p.std.every((s) => s === 1);
  if (!isDefault) steps.push(`normalize: (x − mean) / std with mean [${p.mean.join(', ')}], std [${p.std.join(', ')}]`);
  const order =
    p.channels === 'bgr' ? 'BGR' : p.channels === 'rgb' ? 'RGB' : p.channels === 'grey' ? 'grey' : 'grey or RGB';
  steps.push(
    `${order}, ${p.layout.toUpperCase()} into the model input ${p.input} (${p.float64 ? 'float64' : 'float32'})`,
  );
  return steps;
}

/** What happened to one image on its way to the model, for the notes. */
export interface Prepared {
  /** Converted from RGB to grey or from grey to RGB. */
  converted: 'grey' | 'rgb' | null;
  /** Turned by its EXIF orientation. */
  oriented: boolean;
  /** The decoded size. */
  width: number;
  height: number;
}

/**
 * Runs the pipeline on one decoded image and writes its F features at `out[at…]`. `file` names it in
 * errors; `hf`: the image comes from a Hugging Face Parquet image column (EXIF 'auto' applies then).
 */
export function prepareImage(
  d: Decoded,
  p: Pipeline,
  file: string,
  hf: boolean,
  out: Float32Array | Float64Array,
  at: number,
): Prepared {
  let img = d as import('./pixels').Pixels;
  const oriented = (p.exif === 'apply' || (p.exif === 'auto' && hf)) && d.orientation !== 1;
  if (oriented) img = orient(img, d.orientation);
  let channels = p.channels;
  if (channels === null) {
    // A flat input without a size rule: the image's own size says grey or RGB.
    const px = img.width * img.height;
    channels = px === p.features ? 'grey' : px * 3 === p.features ? 'rgb' : img.channels === 1 ? 'grey' : 'rgb';
  }
  const C = channels === 'grey' ? 1 : 3;
  let converted: Prepared['converted'] = null;
  if (img.channels !== C) {
    img = C === 1 ? toGrey(img) : toRgb(img);
    converted = C === 1 ? 'grey' : 'rgb';
  }
  let { width: w, height: h, data } = img;
  if (p.resize) {
    const [nw, nh] =
      p.resize.kind === 'exact' ? [p.resize.width, p.resize.height] : shorterSideSize(w, h, p.resize.size);
    data = resizeBilinear(data, w, h, C, nw, nh);
    w = nw;
    h = nh;
  }
  if (p.crop) {
    data = centerCrop(data, w, h, C, p.crop.width, p.crop.height);
    w = p.crop.width;
    h = p.crop.height;
  }
  if (p.height !== null && p.width !== null ? w !== p.width || h !== p.height : w * h * C !== p.features) {
    const want = p.height !== null ? `${p.height}×${p.width}` : `${p.features} features`;
    const got =
      p.resize || p.crop ? `${d.width}×${d.height} (${w}×${h} after the resize and crop)` : `${d.width}×${d.height}`;
    throw new InfluenceError(
      'IMAGE_SIZE_MISMATCH',
      `this image is ${got} (width×height) but the model input ${p.input} takes ${want}${p.height !== null ? ' (height×width)' : ''}; with no resize rule every image must have that size: set one with --resize/--center-crop, "resize" in preprocess.json beside the model, or the model's influence_lens.preprocess metadata`,
      { file },
    );
  }
  const n = w * h;
  const { scale, mean, std } = p;
  const bgr = channels === 'bgr';
  const nchw = p.layout === 'nchw';
  for (let c = 0; c < C; c++) {
    // Channel c of the model input holds source channel src (BGR reverses).
    const src = bgr ? 2 - c : c;
    const m = mean.length === 1 ? mean[0] : mean[c];
    const s = std.length === 1 ? std[0] : std[c];
    for (let i = 0; i < n; i++) {
      const x = (data[i * C + src] * scale - m) / s;
      out[at + (nchw ? c * n + i : i * C + c)] = x;
    }
  }
  return { converted, oriented, width: d.width, height: d.height };
}

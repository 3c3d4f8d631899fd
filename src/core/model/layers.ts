/**
 * Beyond the head: the model's parameterized layers, the choice that `--layers` makes among them,
 * and the path a backward pass crosses from the deepest chosen layer to the head's output.
 *
 * A parameterized layer is a Gemm, a MatMul (with the Add of a constant bias that follows it) or a
 * Conv with group = 1 whose weight is a constant. Layers are numbered from the output backwards in
 * the reverse of the graph's node order, the head first (layer 1). Each layer's parameters are
 * θ_l = [W | b], out × (fanIn + 1) row-major (no bias column without a bias), where W is out × in
 * for a dense layer (out = W a + b) and the Conv weight reshaped to out_ch × (in_ch·kh·kw).
 */
import type { GraphProto, NodeProto } from 'onnx-buf';
import { InfluenceError } from '../errors';
import type { Head } from './head';
import { attrFloat, attrInt, GraphIndex, nodeLabel } from './onnx';

export type LayerKind = 'Gemm' | 'MatMul' | 'Conv';

/** Convolution geometry (spatial rank d: kernel, strides, dilations of length d; pads 2d, begins then ends). */
export interface ConvGeometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  pads: number[];
  autoPad: string;
  inChannels: number;
}

export interface Layer {
  /** 1 = the head, counting backwards from the output. */
  index: number;
  kind: LayerKind;
  /** The Gemm / MatMul / Conv node's name (its label when unnamed). */
  name: string;
  /** Labels of the nodes the layer spans: its own, and for MatMul + Add the Add's. */
  nodes: string[];
  node: NodeProto;
  /** The layer's input a (the node's first input) and its output before the bias Add (whose signal is s). */
  input: string;
  output: string;
  out: number;
  /** Inputs per output position: `in` (dense) or in_ch·kh·kw (Conv). */
  fanIn: number;
  bias: boolean;
  /** out × fanIn row-major, float64. */
  W: Float64Array;
  b: Float64Array | null;
  parameters: number;
  conv: ConvGeometry | null;
}

/** What `--layers` asks for: the head, the last K layers, all of them, or layers by name. */
export type LayerSpec = 'head' | 'all' | number | string[];

/** Parses `--layers head|K|all|name1,name2`. */
export function parseLayerSpec(text: string): LayerSpec {
  const t = text.trim();
  if (t === 'head' || t === 'all') return t;
  if (/^\d+$/.test(t)) {
    const k = Number(t);
    if (k < 1) throw new InfluenceError('BAD_OPTION', `--layers K needs K ≥ 1; got '${text}'`);
    return k;
  }
  const names = t
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0)
    throw new InfluenceError(
      'BAD_OPTION',
      `--layers must be head, a count K, all, or node names separated by commas; got '${text}'`,
    );
  return names;
}

/** The layers a spec names: 'head' and 1 are the head alone. */
export function isHeadOnly(spec: LayerSpec | undefined): boolean {
  return spec === undefined || spec === 'head' || spec === 1;
}

/** Consumers of each value. */
function consumers(graph: GraphProto): Map<string, NodeProto[]> {
  const m = new Map<string, NodeProto[]>();
  for (const n of graph.node) {
    for (const i of n.input) {
      if (!i) continue;
      const list = m.get(i);
      if (list) list.push(n);
      else m.set(i, [n]);
    }
  }
  return m;
}

/** Nodes the value `target` depends on (through any input). */
function ancestors(graph: GraphProto, idx: GraphIndex, target: string): Set<NodeProto> {
  const out = new Set<NodeProto>();
  const stack = [target];
  const seen = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const p = idx.producer.get(v);
    if (!p || out.has(p)) continue;
    out.add(p);
    for (const i of p.input) if (i) stack.push(i);
  }
  void graph;
  return out;
}

function ints(node: NodeProto, name: string): number[] | null {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.ints.map(Number) : null;
}

function attrString(node: NodeProto, name: string, dflt: string): string {
  const a = node.attribute.find((x) => x.name === name);
  return a ? new TextDecoder().decode(a.s) : dflt;
}

/** A bias of `out` values from a constant of `out` values or one (broadcast), or null when it is neither. */
function biasOf(values: Float64Array, out: number, factor = 1): Float64Array | null {
  if (values.length === out) return values.map((v) => v * factor);
  if (values.length === 1) return new Float64Array(out).fill(values[0] * factor);
  return null;
}

/** A layer's record from what differs between the kinds. */
function layer(
  kind: LayerKind,
  node: NodeProto,
  nodes: string[],
  out: number,
  fanIn: number,
  W: Float64Array,
  b: Float64Array | null,
  conv: ConvGeometry | null,
): Omit<Layer, 'index'> {
  const name = nodes[0];
  const parameters = out * (fanIn + (b ? 1 : 0));
  return {
    kind,
    name,
    nodes,
    node,
    input: node.input[0],
    output: node.output[0],
    out,
    fanIn,
    bias: b !== null,
    W,
    b,
    parameters,
    conv,
  };
}

/** The layer a node starts, or null when it is not a parameterized layer. */
function layerAt(node: NodeProto, idx: GraphIndex, uses: Map<string, NodeProto[]>): Omit<Layer, 'index'> | null {
  const name = nodeLabel(node);
  if (node.opType === 'Gemm') {
    if (attrInt(node, 'transA', 0) !== 0) return null;
    const B = idx.constant(node.input[1]);
    if (!B || B.dims.length !== 2) return null;
    const transB = attrInt(node, 'transB', 0);
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    const [r, c] = B.dims;
    const out = transB ? r : c;
    const fanIn = transB ? c : r;
    const W = new Float64Array(out * fanIn);
    for (let o = 0; o < out; o++)
      for (let j = 0; j < fanIn; j++)
        W[o * fanIn + j] = alpha * (transB ? B.values[o * fanIn + j] : B.values[j * out + o]);
    let b: Float64Array | null = null;
    if (node.input.length > 2 && node.input[2]) {
      const C = idx.constant(node.input[2]);
      b = C ? biasOf(C.values, out, beta) : null;
      if (!b) return null;
    }
    return layer('Gemm', node, [name], out, fanIn, W, b, null);
  }
  if (node.opType === 'MatMul') {
    const B = idx.constant(node.input[1]);
    if (!B || (B.dims.length !== 2 && B.dims.length !== 1)) return null;
    const [fanIn, out] = B.dims.length === 2 ? B.dims : [B.dims[0], 1];
    const W = new Float64Array(out * fanIn);
    for (let o = 0; o < out; o++) for (let j = 0; j < fanIn; j++) W[o * fanIn + j] = B.values[j * out + o];
    // The Add of a constant bias that follows, when the MatMul feeds nothing else.
    const next = uses.get(node.output[0]) ?? [];
    let b: Float64Array | null = null;
    const nodes = [name];
    if (next.length === 1 && next[0].opType === 'Add') {
      const add = next[0];
      const other = add.input[0] === node.output[0] ? add.input[1] : add.input[0];
      const k = idx.constant(other);
      b = k ? biasOf(k.values, out) : null;
      if (b) nodes.push(nodeLabel(add));
    }
    return layer('MatMul', node, nodes, out, fanIn, W, b, null);
  }
  if (node.opType === 'Conv') {
    if (attrInt(node, 'group', 1) !== 1) return null;
    const Wt = idx.constant(node.input[1]);
    if (!Wt || Wt.dims.length < 3) return null;
    const [out, inChannels, ...kernel] = Wt.dims;
    const d = kernel.length;
    const fanIn = inChannels * kernel.reduce((a, v) => a * v, 1);
    let b: Float64Array | null = null;
    if (node.input.length > 2 && node.input[2]) {
      const k = idx.constant(node.input[2]);
      b = k && k.values.length === out ? Float64Array.from(k.values) : null;
      if (!b) return null;
    }
    const conv: ConvGeometry = {
      kernel,
      strides: ints(node, 'strides') ?? new Array(d).fill(1),
      dilations: ints(node, 'dilations') ?? new Array(d).fill(1),
      pads: ints(node, 'pads') ?? new Array(2 * d).fill(0),
      autoPad: attrString(node, 'auto_pad', 'NOTSET'),
      inChannels,
    };
    return layer('Conv', node, [name], out, fanIn, Float64Array.from(Wt.values), b, conv);
  }
  return null;
}

/** Every parameterized layer the head's output depends on, numbered from the output (the head first). */
export function findLayers(graph: GraphProto, idx: GraphIndex, head: Head): Layer[] {
  const uses = consumers(graph);
  const behind = ancestors(graph, idx, head.zName);
  const headNode = idx.producer.get(head.zName);
  const found: Omit<Layer, 'index'>[] = [];
  for (let q = graph.node.length - 1; q >= 0; q--) {
    const n = graph.node[q];
    if (!behind.has(n)) continue;
    const l = layerAt(n, idx, uses);
    if (l) found.push(l);
  }
  // The head is layer 1 whatever the node order: the layer whose output (or bias Add) gives z.
  const isHead = (l: Omit<Layer, 'index'>) =>
    headNode !== undefined && (l.node === headNode || l.nodes.includes(nodeLabel(headNode)));
  const h = found.findIndex(isHead);
  if (h > 0) found.unshift(...found.splice(h, 1));
  return found.map((l, i) => ({ ...l, index: i + 1 }));
}

/** "1 '/head/Gemm' (Gemm, 330 parameters), 2 …" for messages. */
/** A chosen layer as the result reports it. */
export interface LayerSummary {
  name: string;
  kind: string;
  /** 1 = the head, counting from the output. */
  index: number;
  parameters: number;
}

export function layerSummaries(layers: Layer[]): LayerSummary[] {
  return layers.map((l) => ({ name: l.name, kind: l.kind, index: l.index, parameters: l.parameters }));
}

export function describeLayers(layers: Layer[]): string {
  return layers.map((l) => `${l.index} '${l.name}' (${l.kind}, ${l.parameters} parameters)`).join(', ');
}

/** The layers a spec chooses, in index order (head first). */
export function chooseLayers(all: Layer[], spec: LayerSpec, file?: string): Layer[] {
  if (all.length === 0)
    throw new InfluenceError(
      'NO_LINEAR_HEAD',
      'the model has no parameterized layer (Gemm, MatMul or Conv with constant weights) behind its output',
      { file },
    );
  if (spec === 'head') return [all[0]];
  if (spec === 'all') return all;
  if (typeof spec === 'number') {
    if (spec > all.length) {
      throw new InfluenceError(
        'BAD_OPTION',
        `--layers ${spec}: the model has ${all.length} parameterized layer${all.length === 1 ? '' : 's'}: ${describeLayers(all)}`,
        { file },
      );
    }
    return all.slice(0, spec);
  }
  const chosen = new Set<Layer>();
  for (const name of spec) {
    const l = all.find((x) => x.name === name || x.nodes.includes(name) || x.node.input[1] === name);
    if (!l)
      throw new InfluenceError(
        'BAD_OPTION',
        `--layers: '${name}' names no parameterized layer; the layers, from the output: ${describeLayers(all)}`,
        { file },
      );
    chosen.add(l);
  }
  return [...chosen].sort((a, b) => a.index - b.index);
}

/** Ops the backward pass differentiates through, with the inputs a gradient flows into. */
const PASS_THROUGH = new Set([
  'Identity',
  'Dropout',
  'Cast',
  'Flatten',
  'Reshape',
  'Squeeze',
  'Unsqueeze',
  'Transpose',
]);
const ELEMENTWISE = new Set([
  'Relu',
  'LeakyRelu',
  'Tanh',
  'Sigmoid',
  'Softmax',
  'LogSoftmax',
  'BatchNormalization',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div']);
export const SUPPORTED_OPS = ['Gemm', 'MatMul', 'Conv', ...BINARY, ...ELEMENTWISE, 'Concat', ...PASS_THROUGH];
/** Ops whose outputs carry no gradient (shapes, sizes, comparisons). */
const NO_GRADIENT = new Set([
  'Shape',
  'Size',
  'ArgMax',
  'ArgMin',
  'Equal',
  'Greater',
  'Less',
  'GreaterOrEqual',
  'LessOrEqual',
  'Not',
  'And',
  'Or',
  'NonZero',
  'ConstantOfShape',
  'EyeLike',
  'RandomNormalLike',
  'RandomUniformLike',
]);

/** Inputs that never carry a gradient: shapes, axes, a Dropout's ratio and mode. */
const SHAPE_INPUTS: Record<string, number[]> = {
  Reshape: [1],
  Squeeze: [1],
  Unsqueeze: [1],
  Dropout: [1, 2],
  Expand: [1],
  Slice: [1, 2, 3, 4],
  Tile: [1],
  Pad: [1],
};

/** The inputs of a node that a gradient may flow into (a weight too, so that a computed weight on the path is caught). */
export function gradientInputs(node: NodeProto): number[] {
  const skip = SHAPE_INPUTS[node.opType] ?? [];
  const out: number[] = [];
  node.input.forEach((name, k) => {
    if (name && !skip.includes(k)) out.push(k);
  });
  return out;
}

/** The path of one backward pass: the nodes it crosses (graph order) and the values it reads. */
export interface GradientPath {
  /** Nodes between the deepest chosen layer and the head's output, the chosen layers included, in graph order. */
  nodes: NodeProto[];
  /** Values that depend on the chosen parameters and that z depends on. */
  onPath: Set<string>;
  /** Values of the user's graph the backward pass reads: inputs and outputs of the path's nodes (no constants). */
  taps: string[];
}

/** What an unsupported node on the path means, and which shallower choice avoids it. */
function unsupported(node: NodeProto, why: string, all: Layer[], idx: GraphIndex, file?: string): never {
  // The layers that the node depends on cannot be chosen: the deepest choice that avoids it is the last K before the first of them.
  const behind = new Set<NodeProto>();
  const stack = node.input.filter((i) => i);
  const seen = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    const p = idx.producer.get(v);
    if (!p || behind.has(p)) continue;
    behind.add(p);
    for (const i of p.input) if (i) stack.push(i);
  }
  const first = all.find((l) => behind.has(l.node));
  const k = first ? first.index - 1 : all.length;
  const hint =
    k >= 2
      ? `choose shallower layers: --layers ${k} (the last ${k} layers) avoids it`
      : 'choose shallower layers: --layers head avoids it';
  throw new InfluenceError(
    'UNSUPPORTED_OP',
    `the backward pass from the chosen layers to the output crosses node '${nodeLabel(node)}' (${node.opType}), ${why}; ${hint}`,
    { file, node: nodeLabel(node) },
  );
}

/**
 * The nodes a backward pass from the head's output z to the chosen layers crosses, checked against
 * the ops the pass supports (an UNSUPPORTED_OP error names the node and a shallower --layers).
 */
export function gradientPath(
  graph: GraphProto,
  idx: GraphIndex,
  head: Head,
  all: Layer[],
  chosen: Layer[],
  file?: string,
): GradientPath {
  // Forward: values that depend on a chosen layer's parameters.
  const dep = new Set<string>(chosen.map((l) => l.output));
  for (const n of graph.node) {
    if (NO_GRADIENT.has(n.opType)) continue;
    if (gradientInputs(n).some((k) => dep.has(n.input[k]))) for (const o of n.output) if (o) dep.add(o);
  }
  // Backward: values z depends on through inputs that carry a gradient.
  const need = new Set<string>([head.zName]);
  for (let q = graph.node.length - 1; q >= 0; q--) {
    const n = graph.node[q];
    if (NO_GRADIENT.has(n.opType) || !n.output.some((o) => need.has(o))) continue;
    for (const k of gradientInputs(n)) if (n.input[k]) need.add(n.input[k]);
  }
  const onPath = new Set<string>();
  for (const v of dep) if (need.has(v)) onPath.add(v);
  const nodes = graph.node.filter((n) => n.output.some((o) => onPath.has(o)));
  const taps = new Set<string>();
  const constant = (name: string) => idx.constant(name) !== null || idx.tensor(name) !== null;
  for (const n of nodes) {
    const op = n.opType;
    if (!SUPPORTED_OPS.includes(op))
      unsupported(
        n,
        `an op the backward pass does not support (it supports ${SUPPORTED_OPS.join(', ')})`,
        all,
        idx,
        file,
      );
    if (n.output.slice(1).some((o) => onPath.has(o))) unsupported(n, `whose second output is used`, all, idx, file);
    const inPath = (k: number) => onPath.has(n.input[k]);
    if (op === 'Gemm' || op === 'MatMul' || op === 'Conv') {
      if (n.input.slice(1).some((v) => v && onPath.has(v)))
        unsupported(
          n,
          `whose weight is computed from the chosen layers (only constant weights are supported)`,
          all,
          idx,
          file,
        );
      if (!idx.constant(n.input[1])) unsupported(n, `whose weight '${n.input[1]}' is not a constant`, all, idx, file);
      if (op === 'Gemm' && attrInt(n, 'transA', 0) !== 0) unsupported(n, `a Gemm with transA = 1`, all, idx, file);
      if (op === 'Gemm' && n.input[2] && !idx.constant(n.input[2]))
        unsupported(n, `whose bias is not a constant`, all, idx, file);
      if (op === 'Conv' && attrInt(n, 'group', 1) !== 1)
        unsupported(n, `a Conv with group = ${attrInt(n, 'group', 1)} (only group = 1 is supported)`, all, idx, file);
      if (op === 'Conv' && n.input[2] && !idx.constant(n.input[2]))
        unsupported(n, `whose bias is not a constant`, all, idx, file);
    } else if (op === 'BatchNormalization') {
      if (n.input.slice(1, 5).some((v) => !idx.constant(v)))
        unsupported(n, `whose scale, bias, mean or variance is not a constant`, all, idx, file);
      if (attrInt(n, 'training_mode', 0) !== 0) unsupported(n, `in training mode`, all, idx, file);
    } else if (op === 'Dropout') {
      const t = n.input[2] ? idx.tensor(n.input[2]) : null;
      if (n.input[2] && (!t || (t.int32Data[0] ?? (t.rawData.length ? t.rawData[0] : 0)) !== 0))
        unsupported(n, `a Dropout that may be in training mode`, all, idx, file);
    } else if (!BINARY.has(op) && op !== 'Concat' && !inPath(0)) {
      unsupported(n, `with the chosen layers' values in an input the pass does not differentiate`, all, idx, file);
    }
    for (const k of op === 'Concat' || BINARY.has(op) ? gradientInputs(n) : [0])
      if (!constant(n.input[k])) taps.add(n.input[k]);
    taps.add(n.output[0]);
  }
  taps.add(head.zName);
  return { nodes, onPath, taps: [...taps] };
}

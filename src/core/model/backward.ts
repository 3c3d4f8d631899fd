/**
 * Reverse mode through the user's model, in our own float64 graph (opset 17). The user's graph
 * only gains outputs (the "taps": the values each op on the path reads); this graph takes them,
 * with the signal at the logits, and runs the chain rule back to the chosen layers. Every signal
 * has the shape [k, R, ...per-row dims]: k rows, each with R directions at once (R = 1 for the
 * loss gradient g, C for the columns of a factor of the curvature A), and every tap [k, 1, ...].
 *
 * Per chosen layer it forms X [k, 1, T, D̃] (the input, or a Conv's input patches, with a column of
 * ones for a bias) and S [k, R, T, out] (the signal at the layer's output, T positions), whose product
 * SᵀX is the per-example gradient out × D̃ in θ_l = [W | b] order; T = 1 for a dense layer on rows.
 */
import type { NodeProto } from 'onnx-buf';
import { InfluenceError } from '../errors';
import { F32, F64, I64, GraphBuilder } from '../ort/graph';
import type { Head } from './head';
import type { GradientPath, Layer } from './layers';
import { attrFloat, attrInt, nodeLabel, type GraphIndex } from './onnx';
import {
  convPatchIndex,
  convScatterIndex,
  poolCounts,
  poolPatchIndex,
  poolScatterIndex,
  product,
  resolvePads,
  type WindowGeometry,
} from './windows';

export interface BackwardSpec {
  path: GradientPath;
  chosen: Layer[];
  /** Every parameterized layer, by its node (for the weights of an unchosen layer on the path). */
  layers: Layer[];
  head: Head;
  idx: GraphIndex;
  opset: number;
  /** Per-row dims (after the batch dim) of every tap, from a probe run. */
  rowDims: Map<string, number[]>;
  /** Element type the taps come in. */
  tapElem: typeof F32 | typeof F64;
  /** Number of logits. */
  K: number;
  file?: string;
}

/** Per chosen layer: X [k, 1, T, D̃] and S [k, R, T, out]. */
export interface LayerFactors {
  layer: Layer;
  T: number;
  /** D̃ = fanIn + 1 with a bias. */
  Dt: number;
  x: string;
  s: string;
}

export interface Backward {
  /** Graph input names of the taps, in spec.path.taps order. */
  tapInputs: string[];
  /** [k, R, K] float64: the signal ∂L/∂z (or any direction) at the model's logits. */
  signal: string;
  factors: LayerFactors[];
  /** [k, R, P] float64: per row and direction, the gradient over the chosen layers (θ order, head first). */
  flat: string;
  P: number;
}

const ints = (node: NodeProto, name: string): number[] | null => {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.ints.map(Number) : null;
};

const attrString = (node: NodeProto, name: string, dflt: string): string => {
  const a = node.attribute.find((x) => x.name === name);
  return a ? new TextDecoder().decode(a.s) : dflt;
};

/** Builds the backward pass into g. */
export function buildBackward(g: GraphBuilder, spec: BackwardSpec): Backward {
  return new BackwardBuilder(g, spec).build();
}

class BackwardBuilder {
  private readonly acts = new Map<string, string>();
  private readonly sig = new Map<string, string>();
  private readonly tapInput = new Map<string, string>();
  private readonly layerOf = new Map<NodeProto, Layer>();
  private readonly chosen = new Set<Layer>();
  private readonly recorded = new Map<Layer, string>();

  constructor(
    private readonly g: GraphBuilder,
    private readonly spec: BackwardSpec,
  ) {
    spec.path.taps.forEach((name, j) => {
      const dims = spec.rowDims.get(name);
      if (!dims) throw new Error(`no shape for tap ${name}`);
      this.tapInput.set(name, g.input(`tap${j}`, spec.tapElem, ['k', ...dims]));
    });
    for (const l of spec.layers) this.layerOf.set(l.node, l);
    for (const l of spec.chosen) this.chosen.add(l);
  }

  private fail(node: NodeProto, why: string): never {
    throw new InfluenceError(
      'UNSUPPORTED_OP',
      `the backward pass crosses node '${nodeLabel(node)}' (${node.opType}), ${why}; choose shallower layers with --layers`,
      { file: this.spec.file, node: nodeLabel(node) },
    );
  }

  /** Per-row dims of a value on the path (or a tap). */
  private dims(name: string): number[] {
    const d = this.spec.rowDims.get(name);
    if (!d) throw new Error(`no shape for ${name}`);
    return d;
  }

  /** A value the pass reads, as float64 [k, 1, ...row] (a tap) or as the constant it is. */
  private act(name: string): string {
    const have = this.acts.get(name);
    if (have) return have;
    const { g } = this;
    let v: string;
    const tap = this.tapInput.get(name);
    if (tap) {
      const x = this.spec.tapElem === F64 ? tap : g.cast(tap, F64);
      v = g.op('Unsqueeze', [x, g.ints([1])]);
    } else {
      const c = this.spec.idx.constant(name);
      if (!c) throw new Error(`value ${name} is neither a tap nor a constant`);
      v = g.constant(F64, c.dims, c.values);
    }
    this.acts.set(name, v);
    return v;
  }

  /** A constant operand's dims, or null for a tap. */
  private constDims(name: string): number[] | null {
    if (this.tapInput.has(name)) return null;
    return this.spec.idx.constant(name)?.dims ?? null;
  }

  private addSignal(name: string, v: string): void {
    const have = this.sig.get(name);
    this.sig.set(name, have ? this.g.add(have, v) : v);
  }

  private reshapeRow(v: string, row: number[]): string {
    return this.g.reshape(v, [0, 0, ...row]);
  }

  /** dy (shaped like the output rows) summed down to an input's per-row shape (undoing broadcasting). */
  private unbroadcast(node: NodeProto, dy: string, outRow: number[], inRow: number[]): string {
    if (inRow.length !== outRow.length)
      this.fail(
        node,
        `which broadcasts a value of per-row shape [${inRow.join(', ')}] against [${outRow.join(', ')}] (the batch dimension would not stay first)`,
      );
    const axes: number[] = [];
    inRow.forEach((d, a) => {
      if (d === 1 && outRow[a] !== 1) axes.push(a + 2);
      else if (d !== outRow[a]) this.fail(node, `with shapes that do not broadcast`);
    });
    return axes.length ? this.g.reduceSum(dy, axes, 1) : dy;
  }

  /** A constant operand of an elementwise op, checked not to span the batch. */
  private operand(node: NodeProto, name: string, outRank: number): string {
    const cd = this.constDims(name);
    if (cd && cd.length > outRank + 1) this.fail(node, `with a constant of more dims than its output`);
    if (cd && cd.length === outRank + 1 && cd[0] !== 1)
      this.fail(node, `with a constant that spans the batch dimension`);
    return this.act(name);
  }

  build(): Backward {
    const { g, spec } = this;
    const { head, K } = spec;
    const zRow = this.dims(head.zName);
    if (product(zRow) !== K) throw new Error(`the head's output has ${product(zRow)} values per row; expected ${K}`);
    const signal = g.input('sig', F64, ['k', 'R', K]);
    this.addSignal(
      head.zName,
      this.reshapeRow(head.scale === 1 ? signal : g.mul(signal, g.constant(F64, [], [head.scale])), zRow),
    );
    const nodes = spec.path.nodes;
    for (let q = nodes.length - 1; q >= 0; q--) {
      const node = nodes[q];
      const dy = this.sig.get(node.output[0]);
      if (!dy) continue;
      this.node(node, dy);
    }
    const factors = spec.chosen.map((l) => this.factors(l));
    // θ order: layers head first, each out × D̃ row-major.
    const parts = factors.map((f) =>
      g.reshape(g.matmul(g.op('Transpose', [f.s], { perm: [0, 1, 3, 2] }), f.x), [0, 0, -1]),
    );
    const flat = parts.length === 1 ? parts[0] : g.op('Concat', parts, { axis: 2 });
    const P = spec.chosen.reduce((a, l) => a + l.parameters, 0);
    return { tapInputs: spec.path.taps.map((t) => this.tapInput.get(t)!), signal, factors, flat, P };
  }

  /** X and S of a chosen layer. */
  private factors(l: Layer): LayerFactors {
    const { g } = this;
    const s = this.recorded.get(l);
    const outRow = this.dims(l.output);
    const inRow = this.dims(l.input);
    const Dt = l.fanIn + (l.bias ? 1 : 0);
    const withOnes = (x: string, rank: number) => (l.bias ? this.pad(x, rank, 1, 1) : x);
    if (l.kind === 'Conv') {
      const w = this.convWindow(l, inRow, outRow);
      const cin = l.conv!.inChannels;
      const { T, K, index } = convPatchIndex(w, cin);
      const xflat = this.pad(g.reshape(this.act(l.input), [0, 0, -1]), 3, 1, 0);
      const patches = g.op('Gather', [xflat, g.constant(I64, [T, K], index)], { axis: 2 });
      const sl = s ? g.op('Transpose', [g.reshape(s, [0, 0, l.out, T])], { perm: [0, 1, 3, 2] }) : this.zeros(T, l.out);
      return { layer: l, T, Dt, x: withOnes(patches, 4), s: sl };
    }
    // Dense: a [k, 1, T..., in] with out [k, R, T..., out] (T = 1 for a dense layer on rows).
    const T = product(inRow.slice(0, -1));
    if (l.kind === 'MatMul' && outRow.length === inRow.length - 1) {
      // A 1-D weight: one output per row, its dim dropped.
      const x = g.reshape(this.act(l.input), [0, 0, T, l.fanIn]);
      const sl = s ? g.reshape(s, [0, 0, T, 1]) : this.zeros(T, 1);
      return { layer: l, T, Dt, x: withOnes(x, 4), s: sl };
    }
    const x = g.reshape(this.act(l.input), [0, 0, T, l.fanIn]);
    const sl = s ? g.reshape(s, [0, 0, T, l.out]) : this.zeros(T, l.out);
    return { layer: l, T, Dt, x: withOnes(x, 4), s: sl };
  }

  /** A zero signal [k, R, T, m] for a chosen layer the output does not depend on (shaped from the logits' signal). */
  private zeros(T: number, m: number): string {
    const { g } = this;
    const sig = this.sig.get(this.spec.head.zName)!;
    // 0·(Σ over the row of the logits' signal) keeps [k, R] and broadcasts to [k, R, T, m].
    const base = g.reshape(
      g.mul(g.reduceSum(g.reshape(sig, [0, 0, -1]), [2], 1), g.constant(F64, [], [0])),
      [0, 0, 1, 1],
    );
    return g.mul(base, g.constant(F64, [T, m], new Array(T * m).fill(0)));
  }

  /** Pads the last axis of a rank-`rank` tensor with `count` entries of `value` at its end. */
  private pad(x: string, rank: number, count: number, value: number): string {
    const { g } = this;
    const pads = new Array(2 * rank).fill(0);
    pads[2 * rank - 1] = count;
    return g.op('Pad', [x, g.ints(pads), g.constant(F64, [], [value])], { mode: 'constant' });
  }

  private convWindow(l: Layer, inRow: number[], outRow: number[]): WindowGeometry {
    const c = l.conv!;
    const base = {
      inSpatial: inRow.slice(1),
      outSpatial: outRow.slice(1),
      kernel: c.kernel,
      strides: c.strides,
      dilations: c.dilations,
    };
    return { ...base, pads: resolvePads(c.autoPad, c.pads, base) };
  }

  private poolWindow(node: NodeProto, inRow: number[], outRow: number[], global = false): WindowGeometry {
    const sp = inRow.slice(1);
    const d = sp.length;
    const kernel = global ? sp : (ints(node, 'kernel_shape') ?? this.fail(node, 'without kernel_shape'));
    const base = {
      inSpatial: sp,
      outSpatial: outRow.slice(1),
      kernel,
      strides: global ? new Array(d).fill(1) : (ints(node, 'strides') ?? new Array(d).fill(1)),
      dilations: global ? new Array(d).fill(1) : (ints(node, 'dilations') ?? new Array(d).fill(1)),
    };
    return {
      ...base,
      pads: global
        ? new Array(2 * d).fill(0)
        : resolvePads(attrString(node, 'auto_pad', 'NOTSET'), ints(node, 'pads') ?? [], base),
    };
  }

  /** Sums the window entries of dp [k, R, E] back into `entries` input positions by a gather table; pad index E is a zero. */
  private scatter(dp: string, table: { L: number; index: number[] }, entries: number): string {
    const { g } = this;
    const padded = this.pad(dp, 3, 1, 0);
    const gathered = g.op('Gather', [padded, g.constant(I64, [entries, table.L], table.index)], { axis: 2 });
    return g.reduceSum(gathered, [3], 0);
  }

  private node(node: NodeProto, dy: string): void {
    const { g, spec } = this;
    const op = node.opType;
    const out = node.output[0];
    const outRow = this.dims(out);
    const x = node.input[0];
    const onPath = (name: string) => spec.path.onPath.has(name);
    const give = (name: string, v: string) => {
      if (onPath(name)) this.addSignal(name, v);
    };
    switch (op) {
      case 'Identity':
      case 'Dropout':
      case 'Cast':
        return give(x, dy);
      case 'Flatten':
      case 'Reshape':
      case 'Squeeze':
      case 'Unsqueeze':
        return give(x, this.reshapeRow(dy, this.dims(x)));
      case 'Transpose': {
        const r = outRow.length + 1;
        const perm = ints(node, 'perm') ?? Array.from({ length: r }, (_, a) => r - 1 - a);
        if (perm[0] !== 0) this.fail(node, `which moves the batch dimension (perm [${perm.join(', ')}])`);
        const inv = new Array(r);
        perm.forEach((p, a) => (inv[p] = a));
        return give(x, g.op('Transpose', [dy], { perm: [0, 1, ...inv.slice(1).map((a: number) => a + 1)] }));
      }
      case 'Relu':
        return give(x, g.mul(dy, g.cast(g.op('Greater', [this.act(x), g.constant(F64, [], [0])]), F64)));
      case 'LeakyRelu': {
        const alpha = attrFloat(node, 'alpha', 0.01);
        const slope = g.op('Where', [
          g.op('Greater', [this.act(x), g.constant(F64, [], [0])]),
          g.constant(F64, [], [1]),
          g.constant(F64, [], [alpha]),
        ]);
        return give(x, g.mul(dy, slope));
      }
      case 'Tanh': {
        const t = g.op('Tanh', [this.act(x)]);
        return give(x, g.mul(dy, g.sub(g.constant(F64, [], [1]), g.mul(t, t))));
      }
      case 'Sigmoid': {
        const s = g.op('Sigmoid', [this.act(x)]);
        return give(x, g.mul(dy, g.mul(s, g.sub(g.constant(F64, [], [1]), s))));
      }
      case 'Softmax':
      case 'LogSoftmax':
        return give(x, this.softmax(node, dy, outRow));
      case 'BatchNormalization': {
        const c = (k: number) => spec.idx.constant(node.input[k])!.values;
        const [scale, , , variance] = [c(1), c(2), c(3), c(4)];
        const eps = attrFloat(node, 'epsilon', 1e-5);
        const C = outRow[0];
        const f = Array.from(
          { length: C },
          (_, ch) =>
            (scale.length === 1 ? scale[0] : scale[ch]) /
            Math.sqrt((variance.length === 1 ? variance[0] : variance[ch]) + eps),
        );
        return give(x, g.mul(dy, g.constant(F64, [C, ...new Array(outRow.length - 1).fill(1)], f)));
      }
      case 'GlobalAveragePool': {
        const inRow = this.dims(x);
        const S = product(inRow.slice(1));
        return give(x, g.mul(dy, g.constant(F64, inRow.slice(1), new Array(S).fill(1 / S))));
      }
      case 'MaxPool':
        return give(x, this.maxPool(node, dy, outRow));
      case 'AveragePool':
        return give(x, this.averagePool(node, dy, outRow));
      case 'Concat': {
        const r = outRow.length + 1;
        let axis = attrInt(node, 'axis', 0);
        if (axis < 0) axis += r;
        if (axis <= 0) this.fail(node, 'which concatenates along the batch dimension');
        let off = 0;
        for (const name of node.input) {
          const len = (this.constDims(name) ?? this.dims(name))[axis - 1 + (this.constDims(name) ? 1 : 0)];
          if (onPath(name)) give(name, g.op('Slice', [dy, g.ints([off]), g.ints([off + len]), g.ints([axis + 1])]));
          off += len;
        }
        return;
      }
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div':
        return this.binary(node, dy, outRow);
      case 'Gemm':
      case 'MatMul':
      case 'Conv':
        return this.linear(node, dy, outRow);
    }
    // The add-bias node of a MatMul layer is an Add (handled above); anything else was refused by gradientPath.
    this.fail(node, 'an op the backward pass does not support');
  }

  private softmax(node: NodeProto, dy: string, outRow: number[]): string {
    const { g, spec } = this;
    const x = node.input[0];
    const r = outRow.length + 1;
    const legacy = spec.opset < 13;
    let axis = attrInt(node, 'axis', legacy ? 1 : -1);
    if (axis < 0) axis += r;
    if (axis <= 0) this.fail(node, 'over the batch dimension');
    // Before opset 13 the op works on the input coerced to 2-D at `axis`: softmax over all dims from it.
    const flat = legacy && axis < r - 1;
    const pre = outRow.slice(0, axis - 1);
    const post = product(outRow.slice(axis - 1));
    const xs = flat ? g.reshape(this.act(x), [0, 0, ...pre, post]) : this.act(x);
    const dys = flat ? g.reshape(dy, [0, 0, ...pre, post]) : dy;
    const a = flat ? pre.length + 2 : axis + 1;
    const p = g.op('Softmax', [xs], { axis: a });
    const dx =
      node.opType === 'Softmax'
        ? g.mul(p, g.sub(dys, g.reduceSum(g.mul(dys, p), [a], 1)))
        : g.sub(dys, g.mul(p, g.reduceSum(dys, [a], 1)));
    return flat ? this.reshapeRow(dx, outRow) : dx;
  }

  private maxPool(node: NodeProto, dy: string, outRow: number[]): string {
    const { g } = this;
    const x = node.input[0];
    const inRow = this.dims(x);
    const C = inRow[0];
    const w = this.poolWindow(node, inRow, outRow);
    const { T, Q, index } = poolPatchIndex(w, C);
    // The routing: the first largest entry of each window of the forward values as the taps hold them.
    const xflat = this.pad(g.reshape(this.act(x), [0, 0, -1]), 3, 1, -Infinity);
    const windows = g.op('Gather', [xflat, g.constant(I64, [C * T, Q], index)], { axis: 2 });
    const arg = g.op('ArgMax', [windows], { axis: 3, keepdims: 1 });
    const mask = g.cast(
      g.op('Equal', [
        arg,
        g.constant(
          I64,
          [Q],
          Array.from({ length: Q }, (_, q) => q),
        ),
      ]),
      F64,
    );
    const dp = g.reshape(g.mul(g.reshape(dy, [0, 0, C * T, 1]), mask), [0, 0, -1]);
    const dx = this.scatter(dp, poolScatterIndex(w, C), C * product(inRow.slice(1)));
    return this.reshapeRow(dx, inRow);
  }

  private averagePool(node: NodeProto, dy: string, outRow: number[]): string {
    const { g } = this;
    const x = node.input[0];
    const inRow = this.dims(x);
    const C = inRow[0];
    const w = this.poolWindow(node, inRow, outRow);
    const counts = poolCounts(w, attrInt(node, 'count_include_pad', 0) === 1);
    const { T, Q } = { T: counts.length, Q: product(w.kernel) };
    const inv = Array.from({ length: C * T }, (_, e) => 1 / counts[e % T]);
    // Each window entry gets dy/count; col2im over the per-entry copies.
    const dp = g.reshape(
      g.mul(
        g.reshape(dy, [0, 0, C * T, 1]),
        g.mul(g.constant(F64, [C * T, 1], inv), g.constant(F64, [Q], new Array(Q).fill(1))),
      ),
      [0, 0, -1],
    );
    const dx = this.scatter(dp, poolScatterIndex(w, C), C * product(inRow.slice(1)));
    return this.reshapeRow(dx, inRow);
  }

  private binary(node: NodeProto, dy: string, outRow: number[]): void {
    const { g, spec } = this;
    const op = node.opType;
    const [a, b] = node.input;
    const onPath = (name: string) => spec.path.onPath.has(name);
    const r = outRow.length;
    const rowOf = (name: string) => {
      const cd = this.constDims(name);
      // A constant of the output's full rank spans the batch dim (checked to be 1); drop it.
      if (cd) return cd.length === r + 1 ? cd.slice(1) : [...new Array(Math.max(0, r - cd.length)).fill(1), ...cd];
      return this.dims(name);
    };
    const to = (name: string, v: string) => {
      if (onPath(name)) this.addSignal(name, this.unbroadcast(node, v, outRow, rowOf(name)));
    };
    if (op === 'Add') {
      to(a, dy);
      to(b, dy);
    } else if (op === 'Sub') {
      to(a, dy);
      if (onPath(b)) to(b, g.op('Neg', [dy]));
    } else if (op === 'Mul') {
      if (onPath(a)) to(a, g.mul(dy, this.operand(node, b, r)));
      if (onPath(b)) to(b, g.mul(dy, this.operand(node, a, r)));
    } else {
      const den = this.operand(node, b, r);
      if (onPath(a)) to(a, g.op('Div', [dy, den]));
      if (onPath(b)) to(b, g.op('Neg', [g.op('Div', [g.mul(dy, this.operand(node, a, r)), g.mul(den, den)])]));
    }
  }

  /** Gemm, MatMul and Conv: record a chosen layer's signal, and pass the signal on to the input when it is on the path. */
  private linear(node: NodeProto, dy: string, outRow: number[]): void {
    const { g, spec } = this;
    const layer = this.layerOf.get(node);
    if (layer && this.chosen.has(layer)) this.recorded.set(layer, dy);
    const x = node.input[0];
    if (!spec.path.onPath.has(x)) return;
    const inRow = this.dims(x);
    if (node.opType === 'Conv') {
      if (!layer) this.fail(node, 'a Conv whose weight is not a constant 4-D tensor with group = 1');
      const l = layer!;
      const w = this.convWindow(l, inRow, outRow);
      const cin = l.conv!.inChannels;
      const T = product(outRow.slice(1));
      const K = l.fanIn;
      // dpatch[t, c·Q + q] = Σ_o s[o, t] W[o, c·Q + q], then each patch entry back to the input entry it read.
      const dpatch = g.matmul(
        g.op('Transpose', [g.reshape(dy, [0, 0, l.out, T])], { perm: [0, 1, 3, 2] }),
        g.constant(F64, [l.out, K], l.W),
      );
      const dx = this.scatter(
        g.reshape(dpatch, [0, 0, T * K]),
        convScatterIndex(w, cin),
        cin * product(inRow.slice(1)),
      );
      this.addSignal(x, this.reshapeRow(dx, inRow));
      return;
    }
    const B = spec.idx.constant(node.input[1])!;
    if (node.opType === 'MatMul' && B.dims.length === 1) {
      this.addSignal(x, g.mul(g.op('Unsqueeze', [dy, g.ints([-1])]), g.constant(F64, B.dims, B.values)));
      return;
    }
    // out = a·Wᵀ (+ b): ∂/∂a = dy·W, with W as out × in (alpha and the transpose folded in).
    let W: Float64Array;
    let out: number;
    let fanIn: number;
    if (layer) ({ W, out, fanIn } = layer);
    else {
      if (B.dims.length !== 2) this.fail(node, 'whose weight is not a 2-D constant');
      const trans = node.opType === 'Gemm' && attrInt(node, 'transB', 0) === 1;
      const alpha = node.opType === 'Gemm' ? attrFloat(node, 'alpha', 1) : 1;
      [out, fanIn] = trans ? B.dims : [B.dims[1], B.dims[0]];
      W = new Float64Array(out * fanIn);
      for (let o = 0; o < out; o++)
        for (let j = 0; j < fanIn; j++)
          W[o * fanIn + j] = alpha * (trans ? B.values[o * fanIn + j] : B.values[j * out + o]);
    }
    this.addSignal(x, g.matmul(dy, g.constant(F64, [out, fanIn], W)));
  }
}

/**
 * Finding the head: the final linear layer z = W h + b, reached by stepping back from a graph
 * output over ops that keep the logits' meaning: Softmax, LogSoftmax and (one logit) Sigmoid;
 * Identity, Flatten, Reshape, Squeeze, Unsqueeze, Cast and inference Dropout; and a constant scalar
 * Mul or Div (a temperature), whose factor is kept: the model's logits are then scale·z.
 */
import type { NodeProto } from 'onnx-buf';
import { InfluenceError } from '../errors';
import { attrFloat, attrInt, nodeLabel, type GraphIndex } from './onnx';

export type OutputKind = 'logits' | 'probabilities' | 'log-probabilities';

/** The final linear layer z = W h + b, read as float64. */
export interface Head {
  /** Name of the node that computes z (the Gemm, or the Add after MatMul). */
  node: string;
  /** Tensor names of the head input h and the logits z. */
  hName: string;
  zName: string;
  /** Outputs of the layer (rows of W): the classes, or 1 for a binary head's single logit. */
  C: number;
  D: number;
  /** C×D row-major: W[c*D + j]. */
  W: Float64Array;
  /** Length C, or null when the layer has no bias (then θ holds W only). */
  b: Float64Array | null;
  /** The model's logits are scale·z: the product of the constant factors stepped over (1 if none). */
  scale: number;
  /** Element type of h and z: the type of the layer's weights. */
  elem: 'float32' | 'float64';
}

/** A head found behind a graph output: what the output holds, and the ops stepped over to reach the layer. */
export interface HeadPath {
  head: Head;
  kind: OutputKind;
  steps: string[];
}

const PASS_OPS = new Set(['Identity', 'Flatten', 'Reshape', 'Squeeze', 'Unsqueeze', 'Cast', 'Dropout']);

/** The constant factor of a Mul or Div by a scalar constant on the path, or null when it is not one. */
function scalarFactor(node: NodeProto, idx: GraphIndex): { input: string; factor: number } | null {
  for (const k of node.opType === 'Mul' ? [1, 0] : [1]) {
    const c = idx.constant(node.input[k]);
    if (!c || c.values.length === 0 || !c.values.every((v) => v === c.values[0])) continue;
    const v = c.values[0];
    if (!Number.isFinite(v) || v === 0) return null;
    return { input: node.input[1 - k], factor: node.opType === 'Mul' ? v : 1 / v };
  }
  return null;
}

/** The head behind the graph output `outputName`, and what that output holds. */
export function findHead(idx: GraphIndex, outputName: string, path: string): HeadPath {
  let cur = outputName;
  let kind: OutputKind = 'logits';
  let scale = 1;
  let sigmoid = false;
  const steps: string[] = [];
  // A graph with a cycle is not a DAG (ONNX requires one): stepping back around it would never end.
  const seen = new Set<string>();
  for (;;) {
    const p = idx.producer.get(cur);
    if (!p) break;
    if (seen.has(cur)) {
      throw new InfluenceError(
        'MODEL_INVALID',
        `the graph has a cycle: value '${cur}' depends on itself through node '${nodeLabel(p)}' (an ONNX graph must be acyclic)`,
        { file: path, node: nodeLabel(p) },
      );
    }
    seen.add(cur);
    if (p.opType === 'Softmax' || p.opType === 'LogSoftmax' || p.opType === 'Sigmoid') {
      // A normalisation after another one would not be a classifier's output as the tool reads it.
      if (kind !== 'logits') break;
      kind = p.opType === 'LogSoftmax' ? 'log-probabilities' : 'probabilities';
      sigmoid = p.opType === 'Sigmoid';
    } else if (p.opType === 'Mul' || p.opType === 'Div') {
      const s = scalarFactor(p, idx);
      if (!s) break;
      scale *= s.factor;
      steps.push(p.opType);
      cur = s.input;
      continue;
    } else if (!PASS_OPS.has(p.opType)) break;
    steps.push(p.opType);
    cur = p.input[0];
  }
  const headNode = idx.producer.get(cur);
  const found = headNode ? `${headNode.opType} node '${nodeLabel(headNode)}'` : `the graph input '${cur}'`;
  const afterWhat = steps.length ? ` (after stepping back over ${steps.join(', ')})` : '';
  const noHead = (why: string): never => {
    throw new InfluenceError(
      'NO_LINEAR_HEAD',
      `no final linear layer (Gemm, or MatMul + Add) found behind output '${outputName}': it comes from ${found}${afterWhat}; ${why}`,
      {
        file: path,
        node: headNode ? nodeLabel(headNode) : undefined,
      },
    );
  };
  if (!headNode) return noHead('expected a Gemm or MatMul + Add');
  let head: Head;
  if (headNode.opType === 'Gemm') head = gemmHead(headNode, idx, noHead, scale);
  else if (headNode.opType === 'Add' || headNode.opType === 'MatMul') head = matmulHead(headNode, idx, noHead, scale);
  else return noHead('expected a Gemm or MatMul + Add');
  if (sigmoid && head.C !== 1)
    noHead(
      `a Sigmoid over ${head.C} outputs is multi-label classification, which is not supported (a binary head has one logit)`,
    );
  if (head.C === 1 && kind !== 'logits' && !sigmoid)
    noHead(`a ${kind === 'probabilities' ? 'Softmax' : 'LogSoftmax'} over a single logit is constant`);
  return { head, kind, steps };
}

type Fail = (why: string) => never;

function gemmHead(node: NodeProto, idx: GraphIndex, fail: Fail, scale: number): Head {
  if (attrInt(node, 'transA', 0) !== 0) fail('its Gemm has transA=1, which is not supported');
  const transB = attrInt(node, 'transB', 0);
  const alpha = attrFloat(node, 'alpha', 1);
  const beta = attrFloat(node, 'beta', 1);
  const B = idx.constant(node.input[1]);
  if (!B || B.dims.length !== 2) return fail(`the Gemm's weight '${node.input[1]}' is not a constant 2-D tensor`);
  // Gemm computes A·op(B): op(B) is D×C. We store W as C×D.
  const [r, k] = B!.dims;
  const C = transB ? r : k;
  const D = transB ? k : r;
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++)
    for (let j = 0; j < D; j++) W[c * D + j] = alpha * (transB ? B!.values[c * D + j] : B!.values[j * C + c]);
  let b: Float64Array | null = null;
  if (node.input.length > 2 && node.input[2] !== '') {
    const bias = idx.constant(node.input[2]);
    if (!bias) fail(`the Gemm's bias '${node.input[2]}' is not a constant`);
    b = broadcastBias(bias!, C, fail);
    for (let c = 0; c < C; c++) b[c] *= beta;
  }
  return { node: nodeLabel(node), hName: node.input[0], zName: node.output[0], C, D, W, b, scale, elem: B.elem };
}

function matmulHead(node: NodeProto, idx: GraphIndex, fail: Fail, scale: number): Head {
  let mm = node;
  let bias: { dims: number[]; values: Float64Array } | null = null;
  if (node.opType === 'Add') {
    // Either operand order: Add(MatMul(h, W), b) or Add(b, MatMul(h, W)).
    for (const [m, c] of [
      [0, 1],
      [1, 0],
    ] as const) {
      const p = idx.producer.get(node.input[m]);
      const k = idx.constant(node.input[c]);
      if (p && p.opType === 'MatMul' && k) {
        mm = p;
        bias = k;
        break;
      }
    }
    if (mm === node) fail('the Add is not MatMul + constant bias');
  }
  const Wt = idx.constant(mm.input[1]);
  // A 1-D weight [D] gives one logit per row, [N]: a binary head.
  if (!Wt || (Wt.dims.length !== 2 && Wt.dims.length !== 1))
    return fail(`the MatMul's weight '${mm.input[1]}' is not a constant 1-D or 2-D tensor`);
  const [D, C] = Wt.dims.length === 2 ? Wt.dims : [Wt.dims[0], 1];
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) W[c * D + j] = Wt.values[j * C + c];
  return {
    node: nodeLabel(node),
    hName: mm.input[0],
    zName: node.output[0],
    C,
    D,
    W,
    b: bias ? broadcastBias(bias, C, fail) : null,
    scale,
    elem: Wt.elem,
  };
}

function broadcastBias(t: { dims: number[]; values: Float64Array }, C: number, fail: Fail): Float64Array {
  if (t.values.length === C) return Float64Array.from(t.values);
  if (t.values.length === 1) return new Float64Array(C).fill(t.values[0]);
  return fail(`the bias has shape [${t.dims.join(', ')}], expected [${C}]`);
}

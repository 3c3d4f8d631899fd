/**
 * Finding the head: the final linear layer z = W h + b, reached by stepping back from the output
 * over ops that keep the logits' meaning (Softmax, LogSoftmax, Identity, Flatten, Reshape).
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
  C: number;
  D: number;
  /** C×D row-major: W[c*D + j]. */
  W: Float64Array;
  /** Length C, or null when the layer has no bias (then θ holds W only). */
  b: Float64Array | null;
}

const TRAILING_OPS = new Set(['Softmax', 'LogSoftmax', 'Identity', 'Flatten', 'Reshape']);

/** The head behind the graph output `outputName`, and what that output holds. */
export function findHead(idx: GraphIndex, outputName: string, path: string): { head: Head; kind: OutputKind } {
  // Walk back from the output over ops that do not change the argmax, to the linear layer.
  let cur = outputName;
  let kind: OutputKind = 'logits';
  const skipped: string[] = [];
  for (;;) {
    const p = idx.producer.get(cur);
    if (!p || !TRAILING_OPS.has(p.opType)) break;
    if (p.opType === 'Softmax') kind = 'probabilities';
    if (p.opType === 'LogSoftmax') kind = 'log-probabilities';
    skipped.push(p.opType);
    cur = p.input[0];
  }
  const headNode = idx.producer.get(cur);
  const found = headNode ? `${headNode.opType} node '${nodeLabel(headNode)}'` : `the graph input '${cur}'`;
  const afterWhat = skipped.length ? ` (after stepping back over ${skipped.join(', ')})` : '';
  const noHead = (why: string): never => {
    throw new InfluenceError('NO_LINEAR_HEAD', `no final linear layer (Gemm, or MatMul + Add) found: the output comes from ${found}${afterWhat}; ${why}`, { file: path, node: headNode ? nodeLabel(headNode) : undefined });
  };
  if (!headNode) noHead('expected a Gemm or MatMul + Add');

  let head: Head | undefined;
  if (headNode!.opType === 'Gemm') {
    head = gemmHead(headNode!, idx, noHead);
  } else if (headNode!.opType === 'Add' || headNode!.opType === 'MatMul') {
    head = matmulHead(headNode!, idx, noHead);
  } else {
    noHead('expected a Gemm or MatMul + Add');
  }

  return { head: head!, kind };
}

type Fail = (why: string) => never;

function gemmHead(node: NodeProto, idx: GraphIndex, fail: Fail): Head {
  if (attrInt(node, 'transA', 0) !== 0) fail('its Gemm has transA=1, which is not supported');
  const transB = attrInt(node, 'transB', 0);
  const alpha = attrFloat(node, 'alpha', 1);
  const beta = attrFloat(node, 'beta', 1);
  const B = idx.constant(node.input[1]);
  if (!B || B.dims.length !== 2) fail(`the Gemm's weight '${node.input[1]}' is not a constant 2-D tensor`);
  // Gemm computes A·op(B): op(B) is D×C. We store W as C×D.
  const [r, k] = B!.dims;
  const C = transB ? r : k;
  const D = transB ? k : r;
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) W[c * D + j] = alpha * (transB ? B!.values[c * D + j] : B!.values[j * C + c]);
  let b: Float64Array | null = null;
  if (node.input.length > 2 && node.input[2] !== '') {
    const bias = idx.constant(node.input[2]);
    if (!bias) fail(`the Gemm's bias '${node.input[2]}' is not a constant`);
    b = broadcastBias(bias!, C, fail);
    for (let c = 0; c < C; c++) b[c] *= beta;
  }
  return { node: nodeLabel(node), hName: node.input[0], zName: node.output[0], C, D, W, b };
}

function matmulHead(node: NodeProto, idx: GraphIndex, fail: Fail): Head {
  let mm = node;
  let bias: { dims: number[]; values: Float64Array } | null = null;
  if (node.opType === 'Add') {
    // Either operand order: Add(MatMul(h, W), b) or Add(b, MatMul(h, W)).
    for (const [m, c] of [[0, 1], [1, 0]] as const) {
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
  if (!Wt || Wt.dims.length !== 2) fail(`the MatMul's weight '${mm.input[1]}' is not a constant 2-D tensor`);
  const [D, C] = Wt!.dims;
  const W = new Float64Array(C * D);
  for (let c = 0; c < C; c++) for (let j = 0; j < D; j++) W[c * D + j] = Wt!.values[j * C + c];
  return {
    node: nodeLabel(node),
    hName: mm.input[0],
    zName: node.output[0],
    C,
    D,
    W,
    b: bias ? broadcastBias(bias, C, fail) : null,
  };
}

function broadcastBias(t: { dims: number[]; values: Float64Array }, C: number, fail: Fail): Float64Array {
  if (t.values.length === C) return Float64Array.from(t.values);
  if (t.values.length === 1) return new Float64Array(C).fill(t.values[0]);
  return fail(`the bias has shape [${t.dims.join(', ')}], expected [${C}]`);
}

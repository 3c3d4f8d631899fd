/** Reading ONNX protobufs: shapes, attributes, constant tensors and who produces each value. */
import {
  TensorProto_DataType,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';
import { InfluenceError } from '../errors';

export function defaultOpset(model: ModelProto): number {
  const imp = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  return imp ? Number(imp.version) : 1;
}

export function elemTypeOf(v: ValueInfoProto): number | undefined {
  return v.type?.value.case === 'tensorType' ? v.type.value.value.elemType : undefined;
}

/** Shape as numbers, with -1 for symbolic or unknown dims; null when no shape is recorded. */
export function shapeOf(v: ValueInfoProto): number[] | null {
  if (v.type?.value.case !== 'tensorType') return null;
  const shape = v.type.value.value.shape;
  if (!shape) return null;
  return shape.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : -1));
}

export function attrInt(node: NodeProto, name: string, dflt: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? Number(a.i) : dflt;
}

export function attrFloat(node: NodeProto, name: string, dflt: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a ? a.f : dflt;
}

/** Reads an int64 tensor's values (shapes, axes), whichever storage field holds them; [] when it is not a whole int64 tensor. */
export function int64Values(t: TensorProto): number[] {
  if (t.dataType !== TensorProto_DataType.INT64) return [];
  if (t.rawData.length > 0) {
    if (t.rawData.length % 8 !== 0) return [];
    return Array.from(new BigInt64Array(new Uint8Array(t.rawData).buffer), Number);
  }
  return t.int64Data.map(Number);
}

/**
 * The number of elements its dims give a tensor. Its data must hold exactly that many, so a
 * count that no data could match (a negative dim, or more elements than bytes) fails here, before
 * anything is allocated for it.
 */
function elementCount(t: TensorProto, bytesPer: number, stored: number): number {
  let n = 1;
  for (const d of t.dims) {
    const v = Number(d);
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new InfluenceError(
        'MODEL_INVALID',
        `tensor ${t.name} has an invalid dimension ${d} in its dims [${t.dims.join(', ')}]`,
      );
    }
    n *= v;
  }
  const what = t.rawData.length > 0 ? `${t.rawData.length} bytes of data` : `${stored} values`;
  const want = t.rawData.length > 0 ? n * bytesPer : n;
  if ((t.rawData.length > 0 ? t.rawData.length : stored) !== want) {
    throw new InfluenceError(
      'MODEL_INVALID',
      `tensor ${t.name} has ${what} but its dims [${t.dims.join(', ')}] call for ${t.rawData.length > 0 ? `${want} bytes` : `${n} values`}`,
    );
  }
  return n;
}

/** Reads a float tensor's values as float64, whichever storage field holds them. */
export function tensorValues(t: TensorProto): Float64Array {
  if (t.dataLocation === 1) {
    throw new InfluenceError(
      'MODEL_INVALID',
      `tensor ${t.name} uses external data, which is not supported; save the model with its weights inside`,
    );
  }
  if (t.dataType === TensorProto_DataType.FLOAT) {
    const n = elementCount(t, 4, t.floatData.length);
    // Copy first: a view into the protobuf buffer can be misaligned for Float32Array
    // (and Buffer#slice would not copy).
    return t.rawData.length > 0
      ? Float64Array.from(new Float32Array(new Uint8Array(t.rawData).buffer, 0, n))
      : Float64Array.from(t.floatData);
  }
  if (t.dataType === TensorProto_DataType.DOUBLE) {
    const n = elementCount(t, 8, t.doubleData.length);
    return t.rawData.length > 0
      ? new Float64Array(new Uint8Array(t.rawData).buffer, 0, n)
      : Float64Array.from(t.doubleData);
  }
  throw new InfluenceError(
    'UNSUPPORTED_OP',
    `tensor ${t.name} has element type ${TensorProto_DataType[t.dataType] ?? t.dataType}; the head's weights must be float or double`,
  );
}

export class GraphIndex {
  readonly producer = new Map<string, NodeProto>();
  readonly initializers = new Map<string, TensorProto>();
  constructor(readonly graph: GraphProto) {
    for (const n of graph.node) for (const o of n.output) this.producer.set(o, n);
    for (const t of graph.initializer) this.initializers.set(t.name, t);
  }

  /** The tensor of a constant value (initializer, or Constant node with a `value`), or null if it is computed. */
  tensor(name: string): TensorProto | null {
    const init = this.initializers.get(name);
    if (init) return init;
    const p = this.producer.get(name);
    if (p && p.opType === 'Constant') return p.attribute.find((x) => x.name === 'value')?.t ?? null;
    return null;
  }

  /** A constant float tensor's dims and values (float64), or null if the value is computed or not float. */
  constant(name: string): { dims: number[]; values: Float64Array; elem: 'float32' | 'float64' } | null {
    const t = this.tensor(name);
    if (!t || (t.dataType !== TensorProto_DataType.FLOAT && t.dataType !== TensorProto_DataType.DOUBLE)) return null;
    return {
      dims: t.dims.map(Number),
      values: tensorValues(t),
      elem: t.dataType === TensorProto_DataType.DOUBLE ? 'float64' : 'float32',
    };
  }
}

export function nodeLabel(n: NodeProto): string {
  return n.name || `${n.opType}(${n.output[0] ?? '?'})`;
}

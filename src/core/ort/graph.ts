/**
 * Small ONNX graphs built in TypeScript and compiled with onnxruntime-node: a builder whose `op`
 * appends a node, tensors for feeding them, and the compiled Kernel. Our own graphs always use
 * opset 17, whatever the user's model uses.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import {
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProto_DataType,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  ValueInfoProtoSchema,
  type NodeProto,
  type TensorProto,
  type ValueInfoProto,
} from 'onnx-buf';

const THREADS = Math.max(1, Math.min(availableParallelism(), 16));

export const F32 = TensorProto_DataType.FLOAT;
export const F64 = TensorProto_DataType.DOUBLE;
export const I64 = TensorProto_DataType.INT64;
export const I32 = TensorProto_DataType.INT32;
type Elem = typeof F32 | typeof F64 | typeof I64 | typeof I32;
type Dim = number | string;

/** A tensor's ValueInfo: element type and dims (a string dim is symbolic). */
export function valueInfo(name: string, elemType: number, dims: (number | string)[]): ValueInfoProto {
  const shape = create(TensorShapeProtoSchema, {
    dim: dims.map((d) =>
      create(TensorShapeProto_DimensionSchema, {
        value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d },
      }),
    ),
  });
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType, shape }) },
    }),
  });
}

/** A graph under construction: `op` appends a node and returns the name of its (first) output. */
export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly inits: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private count = 0;

  input(name: string, elem: Elem, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elem, dims));
    return name;
  }

  output(value: string, name: string, elem: Elem, dims: Dim[]): void {
    this.nodes.push(this.node('Identity', [value], [name], {}));
    this.outputs.push(valueInfo(name, elem, dims));
  }

  private node(
    opType: string,
    input: string[],
    output: string[],
    attrs: Record<string, number | number[] | string>,
  ): NodeProto {
    return create(NodeProtoSchema, {
      opType,
      name: `${opType}_${output[0]}`,
      input,
      output,
      attribute: Object.entries(attrs).map(([name, v]) =>
        typeof v === 'string'
          ? create(AttributeProtoSchema, {
              name,
              type: AttributeProto_AttributeType.STRING,
              s: new TextEncoder().encode(v),
            })
          : Array.isArray(v)
            ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: v.map(BigInt) })
            : create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(v) }),
      ),
    });
  }

  op(opType: string, input: string[], attrs: Record<string, number | number[] | string> = {}): string {
    const out = `t${this.count++}`;
    this.nodes.push(this.node(opType, input, [out], attrs));
    return out;
  }

  /** A constant (initializer) tensor. */
  constant(elem: Elem, dims: number[], values: ArrayLike<number>): string {
    const name = `c${this.count++}`;
    let raw: Uint8Array<ArrayBuffer>;
    if (elem === F32) raw = new Uint8Array(Float32Array.from(values).buffer);
    else if (elem === F64) raw = new Uint8Array(Float64Array.from(values).buffer);
    else if (elem === I32) raw = new Uint8Array(Int32Array.from(values).buffer);
    else raw = new Uint8Array(BigInt64Array.from(Array.from(values, (v) => BigInt(v))).buffer);
    this.inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: elem, rawData: raw }));
    return name;
  }

  ints(values: number[]): string {
    return this.constant(I64, [values.length], values);
  }

  // Shorthands.
  matmul(a: string, b: string): string {
    return this.op('MatMul', [a, b]);
  }
  gemm(a: string, b: string, transA = 0, transB = 0): string {
    return this.op('Gemm', [a, b], { transA, transB });
  }
  mul(a: string, b: string): string {
    return this.op('Mul', [a, b]);
  }
  add(a: string, b: string): string {
    return this.op('Add', [a, b]);
  }
  sub(a: string, b: string): string {
    return this.op('Sub', [a, b]);
  }
  cast(a: string, to: Elem): string {
    return this.op('Cast', [a], { to });
  }
  reshape(a: string, shape: number[]): string {
    return this.op('Reshape', [a, this.ints(shape)]);
  }
  reduceSum(a: string, axes: number[], keepdims = 1): string {
    return this.op('ReduceSum', [a, this.ints(axes)], { keepdims });
  }

  /**
   * The nodes (in order) and constants that some output depends on: onnxruntime runs every node it
   * is given, used or not, and a kernel built on a shared subgraph (the backward pass) uses only part of it.
   */
  private live(): { nodes: NodeProto[]; inits: TensorProto[] } {
    const need = new Set(this.outputs.map((o) => o.name));
    const nodes: NodeProto[] = [];
    // Nodes are appended after their inputs' producers, so one backward sweep finds every one needed.
    for (let q = this.nodes.length - 1; q >= 0; q--) {
      const n = this.nodes[q];
      if (!n.output.some((o) => need.has(o))) continue;
      nodes.push(n);
      for (const i of n.input) if (i) need.add(i);
    }
    return { nodes: nodes.reverse(), inits: this.inits.filter((t) => need.has(t.name)) };
  }

  serialize(): Uint8Array {
    const { nodes, inits } = this.live();
    const graph = create(GraphProtoSchema, {
      name: 'influence_lens_math',
      node: nodes,
      initializer: inits,
      input: this.inputs,
      output: this.outputs,
    });
    const model = create(ModelProtoSchema, {
      irVersion: 8n,
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n })],
      producerName: 'influence-lens',
      graph,
    });
    return toBinary(ModelProtoSchema, model);
  }

  /** `threads`: by default every core (ORT's default here is one thread; these kernels are large GEMMs that scale). */
  async session(threads = THREADS): Promise<Kernel> {
    const session = await ort.InferenceSession.create(this.serialize(), {
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: threads,
      // The JS side works between runs; spinning pool threads would only compete with it.
      extra: { session: { intra_op: { allow_spinning: '0' } } },
    });
    return new Kernel(session);
  }
}

export type Feed = Record<string, ort.Tensor>;

/** One compiled graph. */
export class Kernel {
  constructor(private readonly session: ort.InferenceSession) {}

  async run(feeds: Feed): Promise<Record<string, ort.Tensor>> {
    return this.session.run(feeds);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function f32(data: Float32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}
export function f64(data: Float64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('float64', data, dims);
}
export function i64(data: BigInt64Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('int64', data, dims);
}
export function i32(data: Int32Array, dims: number[]): ort.Tensor {
  return new ort.Tensor('int32', data, dims);
}

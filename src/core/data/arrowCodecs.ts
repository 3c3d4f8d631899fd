/**
 * Decoders for compressed Arrow IPC record batches, registered with apache-arrow once, when this
 * module is first imported (by columnar.ts): LZ4_FRAME (our own frame decoder, lz4.ts), which
 * pyarrow's `write_feather` and pandas' `to_feather` use by default, and ZSTD (fzstd). Decoding only:
 * nothing here writes compressed Arrow. Arrow hands `decode` a buffer's bytes after its 8-byte
 * uncompressed-length prefix; a malformed buffer throws, which the reader reports as ARROW_INVALID.
 */
import { compressionRegistry, CompressionType } from 'apache-arrow';
import { decompress as zstdDecompress } from 'fzstd';
import { lz4FrameDecode } from './lz4';

const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Arrow views a decoded buffer as typed arrays (Float64Array, BigInt64Array) at its byte offset,
 * which must then be a multiple of 8: fzstd returns a view 12 bytes into its allocation when the
 * frame declares its content size (as every one-shot ZSTD frame, pyarrow's included, does).
 */
function aligned(out: Uint8Array): Uint8Array {
  return out.byteOffset % 8 === 0 ? out : out.slice();
}

/** ZSTD frames (fzstd), with its failures as Errors that say ZSTD. */
export function zstdDecode(data: Uint8Array): Uint8Array {
  if (data.length < 4 || (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0 !== ZSTD_MAGIC) {
    // A skippable frame first is valid ZSTD too.
    const skippable =
      data.length >= 4 && data[3] === 0x18 && data[2] === 0x4d && data[1] === 0x2a && (data[0] & 0xf0) === 0x50;
    if (!skippable) throw new Error('ZSTD: not a Zstandard frame');
  }
  try {
    return aligned(zstdDecompress(data));
  } catch (e) {
    throw new Error(`ZSTD: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

compressionRegistry.set(CompressionType.LZ4_FRAME, { decode: (data) => aligned(lz4FrameDecode(data)) });
compressionRegistry.set(CompressionType.ZSTD, { decode: zstdDecode });

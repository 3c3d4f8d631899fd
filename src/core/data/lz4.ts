/**
 * LZ4 frame decoding (the format `lz4` and Arrow's LZ4_FRAME body compression write), written from
 * the LZ4 frame and block format descriptions: concatenated frames and skippable frames, 64 KB to
 * 4 MB blocks, linked or independent, stored (uncompressed) blocks, and the header, block and content
 * checksums (xxHash32), each verified when present. Anything malformed or truncated throws an Error:
 * every length and offset is checked against its buffer before use, and every loop consumes input.
 */

const FRAME_MAGIC = 0x184d2204;
/** Skippable frames: 0x184D2A50 to 0x184D2A5F. */
const SKIPPABLE_MAGIC = 0x184d2a50;
/** Block maximum sizes by the BD byte's block size id (4 to 7). */
const BLOCK_MAX = [0, 0, 0, 0, 64 << 10, 256 << 10, 1 << 20, 4 << 20];

/** What a decode met, for tests and measurements. */
export interface Lz4Stats {
  frames: number;
  skippableFrames: number;
  blocks: number;
  /** Blocks stored uncompressed (the block size's high bit). */
  storedBlocks: number;
  /** Frames whose blocks may refer back into earlier blocks. */
  linkedFrames: number;
  blockChecksums: number;
  contentChecksums: number;
  contentSizes: number;
  /** The largest block maximum size of the frames (from BD). */
  maxBlockSize: number;
}

export function emptyLz4Stats(): Lz4Stats {
  return {
    frames: 0,
    skippableFrames: 0,
    blocks: 0,
    storedBlocks: 0,
    linkedFrames: 0,
    blockChecksums: 0,
    contentChecksums: 0,
    contentSizes: 0,
    maxBlockSize: 0,
  };
}

function fail(what: string): never {
  throw new Error(`LZ4 frame: ${what}`);
}

function u32(b: Uint8Array, i: number): number {
  return (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
}

// ---------------------------------------------------------------------------------------
// xxHash32

const P1 = 2654435761;
const P2 = 2246822519;
const P3 = 3266489917;
const P4 = 668265263;
const P5 = 374761393;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

function round(acc: number, lane: number): number {
  return Math.imul(rotl((acc + Math.imul(lane, P2)) | 0, 13), P1);
}

/** xxHash32 of b[start, end) with the given seed, as an unsigned 32-bit number. */
export function xxh32(b: Uint8Array, start = 0, end = b.length, seed = 0): number {
  let i = start;
  const len = end - start;
  let h: number;
  if (len >= 16) {
    let v1 = (seed + P1 + P2) | 0;
    let v2 = (seed + P2) | 0;
    let v3 = seed | 0;
    let v4 = (seed - P1) | 0;
    for (const last = end - 16; i <= last; i += 16) {
      v1 = round(v1, u32(b, i));
      v2 = round(v2, u32(b, i + 4));
      v3 = round(v3, u32(b, i + 8));
      v4 = round(v4, u32(b, i + 12));
    }
    h = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) | 0;
  } else {
    h = (seed + P5) | 0;
  }
  h = (h + len) | 0;
  for (; i + 4 <= end; i += 4) h = Math.imul(rotl((h + Math.imul(u32(b, i), P3)) | 0, 17), P4);
  for (; i < end; i++) h = Math.imul(rotl((h + Math.imul(b[i], P5)) | 0, 11), P1);
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------
// Output

/** The decoded bytes so far, in a buffer sized from the frames' bound, grown by doubling if need be. */
class Output {
  buf: Uint8Array;
  pos = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
  }
  /** Room for `n` more bytes. */
  reserve(n: number): Uint8Array {
    const need = this.pos + n;
    if (need > this.buf.length) {
      const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.pos));
      this.buf = grown;
    }
    return this.buf;
  }
  /** The bytes written: a view of the buffer when at most a quarter is unused, else a copy. */
  result(): Uint8Array {
    const { buf, pos } = this;
    return buf.length - pos <= buf.length >>> 2 ? buf.subarray(0, pos) : buf.slice(0, pos);
  }
}

// ---------------------------------------------------------------------------------------
// Blocks

/**
 * Decodes one compressed block src[ip, end) onto `out`, at most `max` bytes. A match may refer back
 * to `windowStart` (the block's own start for independent blocks, the frame's for linked ones).
 */
function decodeBlock(src: Uint8Array, ip: number, end: number, out: Output, max: number, windowStart: number): void {
  const limit = out.pos + max;
  let op = out.pos;
  let dst = out.buf;
  for (;;) {
    if (ip >= end) fail('a block ends without its last literals (truncated or corrupt)');
    const token = src[ip++];
    // Literals.
    let lit = token >>> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (ip >= end) fail('a literal length runs past the end of its block');
        b = src[ip++];
        lit += b;
      } while (b === 255);
    }
    if (lit > end - ip) fail('literals run past the end of their block');
    if (lit > limit - op) fail(`a block decodes to more than its maximum size ${max}`);
    if (op + lit > dst.length) {
      out.pos = op;
      dst = out.reserve(lit);
    }
    if (lit < 32) {
      for (const stop = ip + lit; ip < stop;) dst[op++] = src[ip++];
    } else {
      dst.set(src.subarray(ip, ip + lit), op);
      ip += lit;
      op += lit;
    }
    if (ip === end) break; // the last sequence: literals only
    // Match.
    if (end - ip < 2) fail('a match offset runs past the end of its block');
    const offset = src[ip] | (src[ip + 1] << 8);
    ip += 2;
    if (offset === 0) fail('a match offset of 0');
    if (offset > op - windowStart) fail(`a match offset ${offset} points before the start of the data`);
    let len = (token & 15) + 4;
    if (len === 19) {
      let b: number;
      do {
        if (ip >= end) fail('a match length runs past the end of its block');
        b = src[ip++];
        len += b;
      } while (b === 255);
    }
    if (len > limit - op) fail(`a block decodes to more than its maximum size ${max}`);
    // Room for the match and up to 7 bytes past it (the 8-byte copy below may overrun).
    if (op + len + 8 > dst.length) {
      out.pos = op;
      dst = out.reserve(len + 8);
    }
    let ref = op - offset;
    const stop = op + len;
    if (offset >= len && len >= 64) {
      dst.copyWithin(op, ref, stop - offset);
    } else {
      // Byte by byte in order, so that an overlapping match (offset < length) repeats its last
      // `offset` bytes; 8 bytes a turn, writing up to 7 past `stop`, which what comes next overwrites.
      do {
        dst[op] = dst[ref];
        dst[op + 1] = dst[ref + 1];
        dst[op + 2] = dst[ref + 2];
        dst[op + 3] = dst[ref + 3];
        dst[op + 4] = dst[ref + 4];
        dst[op + 5] = dst[ref + 5];
        dst[op + 6] = dst[ref + 6];
        dst[op + 7] = dst[ref + 7];
        op += 8;
        ref += 8;
      } while (op < stop);
    }
    op = stop;
  }
  out.pos = op;
}

// ---------------------------------------------------------------------------------------
// Frames

interface Frame {
  independent: boolean;
  blockMax: number;
  /** Declared content size, or -1. */
  contentSize: number;
  /** The content checksum's offset in the input, or -1. */
  contentChecksumAt: number;
  /** Each block's data offset in the input and its size; negative sizes are stored blocks. */
  blocks: number[];
}

/**
 * The frames of `src` (skippable frames skipped): their descriptors and blocks, bounds-checked, with
 * header and block checksums verified; and an upper bound of their decoded size.
 */
function parseFrames(src: Uint8Array, stats?: Lz4Stats): { frames: Frame[]; bound: number } {
  const frames: Frame[] = [];
  let bound = 0;
  let ip = 0;
  const need = (n: number, what: string) => {
    if (src.length - ip < n) fail(`truncated ${what} (${n} bytes needed at byte ${ip} of ${src.length})`);
  };
  while (ip < src.length) {
    need(4, 'frame magic number');
    const magic = u32(src, ip);
    if ((magic & 0xfffffff0) >>> 0 === SKIPPABLE_MAGIC) {
      need(8, 'skippable frame header');
      const size = u32(src, ip + 4);
      ip += 8;
      need(size, 'skippable frame');
      ip += size;
      if (stats) stats.skippableFrames++;
      continue;
    }
    if (magic !== FRAME_MAGIC) fail(`not an LZ4 frame at byte ${ip} (magic 0x${magic.toString(16).padStart(8, '0')})`);
    ip += 4;
    // Frame descriptor: FLG, BD, [content size, 8], [dictionary id, 4], header checksum.
    need(3, 'frame descriptor');
    const descStart = ip;
    const flg = src[ip];
    const bd = src[ip + 1];
    if (flg >>> 6 !== 1) fail(`unsupported frame version ${flg >>> 6}`);
    if (flg & 0x02) fail('reserved bit set in the frame descriptor');
    if (bd & 0x8f) fail('reserved bits set in the block descriptor');
    const blockChecksum = (flg & 0x10) !== 0;
    const hasContentSize = (flg & 0x08) !== 0;
    const hasDictId = (flg & 0x01) !== 0;
    const blockMax = BLOCK_MAX[(bd >>> 4) & 7];
    if (!blockMax) fail(`invalid block maximum size id ${(bd >>> 4) & 7}`);
    ip += 2;
    const descLen = 2 + (hasContentSize ? 8 : 0) + (hasDictId ? 4 : 0);
    need(descLen - 2 + 1, 'frame descriptor');
    const frame: Frame = {
      independent: (flg & 0x20) !== 0,
      blockMax,
      contentSize: -1,
      contentChecksumAt: -1,
      blocks: [],
    };
    if (hasContentSize) {
      const lo = u32(src, ip);
      const hi = u32(src, ip + 4);
      // More than 255 bytes per input byte cannot come out of this input.
      if (hi >= 0x200000 || hi * 2 ** 32 + lo > src.length * 255) fail('declared content size too large for its data');
      frame.contentSize = hi * 2 ** 32 + lo;
      ip += 8;
    }
    if (hasDictId) fail(`the frame needs a dictionary (id ${u32(src, ip)}), which is not available`);
    if (src[ip] !== ((xxh32(src, descStart, descStart + descLen) >>> 8) & 0xff)) fail('frame header checksum mismatch');
    ip++;
    // Blocks, to the end mark.
    let frameBound = 0;
    for (;;) {
      need(4, 'block size');
      const word = u32(src, ip);
      ip += 4;
      const stored = word >>> 31 === 1;
      const size = word & 0x7fffffff;
      if (size === 0) break; // the end mark (with the high bit too, as the reference decoder takes it)
      if (size > blockMax) fail(`a block of ${size} bytes exceeds the frame's maximum block size ${blockMax}`);
      need(size + (blockChecksum ? 4 : 0), 'block');
      if (blockChecksum) {
        if (xxh32(src, ip, ip + size) !== u32(src, ip + size)) fail('block checksum mismatch');
        if (stats) stats.blockChecksums++;
      }
      frame.blocks.push(ip, stored ? -size : size);
      // A compressed block decodes to less than 255 bytes per byte, and to at most the block maximum.
      frameBound += stored ? size : Math.min(blockMax, size * 255);
      if (stats) {
        stats.blocks++;
        if (stored) stats.storedBlocks++;
      }
      ip += size + (blockChecksum ? 4 : 0);
    }
    if (flg & 0x04) {
      need(4, 'content checksum');
      frame.contentChecksumAt = ip;
      ip += 4;
    }
    bound += frame.contentSize >= 0 ? frame.contentSize : frameBound;
    frames.push(frame);
    if (stats) {
      stats.frames++;
      if (!frame.independent) stats.linkedFrames++;
      if (hasContentSize) stats.contentSizes++;
      stats.maxBlockSize = Math.max(stats.maxBlockSize, blockMax);
    }
  }
  return { frames, bound };
}

/**
 * Decodes LZ4 frames: one or more concatenated frames (and skippable frames) filling `src` exactly.
 * Throws an Error on anything malformed, truncated, or failing a checksum.
 */
export function lz4FrameDecode(src: Uint8Array, stats?: Lz4Stats): Uint8Array {
  if (src.length === 0) fail('no data');
  const { frames, bound } = parseFrames(src, stats);
  // The bound is exact for declared sizes and within a block of the truth for full blocks; 8 bytes
  // more for decodeBlock's 8-byte match copies.
  const out = new Output(bound + 8);
  for (const frame of frames) {
    const frameStart = out.pos;
    const { blocks } = frame;
    for (let b = 0; b < blocks.length; b += 2) {
      const at = blocks[b];
      const size = blocks[b + 1];
      if (size < 0) {
        out.reserve(-size).set(src.subarray(at, at - size), out.pos);
        out.pos -= size;
      } else {
        decodeBlock(src, at, at + size, out, frame.blockMax, frame.independent ? out.pos : frameStart);
      }
    }
    if (frame.contentChecksumAt >= 0) {
      if (xxh32(out.buf, frameStart, out.pos) !== u32(src, frame.contentChecksumAt)) fail('content checksum mismatch');
      if (stats) stats.contentChecksums++;
    }
    if (frame.contentSize >= 0 && out.pos - frameStart !== frame.contentSize) {
      fail(`the frame decodes to ${out.pos - frameStart} bytes, not its declared ${frame.contentSize}`);
    }
  }
  return out.result();
}

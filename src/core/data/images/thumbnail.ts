/**
 * Thumbnails of the real images for the panel, the tree and the hovers: the decoded image (before any
 * preprocessing), shrunk with Pillow's bilinear filter to fit a size × size box (never enlarged: the
 * panel scales small images up with pixelated rendering), as a PNG data URI.
 */
import { PNG } from 'pngjs';
import { decodeImage } from './decode';
import { readWithStamp } from './load';
import { resizeBilinear } from './resize';

export async function thumbnail(bytes: Uint8Array, name: string, size = 64): Promise<string> {
  const d = await decodeImage(bytes, name);
  const scale = Math.min(1, size / Math.max(d.width, d.height));
  const w = Math.max(1, Math.round(d.width * scale));
  const h = Math.max(1, Math.round(d.height * scale));
  const data = scale < 1 ? resizeBilinear(d.data, d.width, d.height, d.channels, w, h) : d.data;
  const png = new PNG({ width: w, height: h });
  const rgba = Buffer.alloc(w * h * 4);
  for (let i = 0; i < w * h; i++) {
    for (let c = 0; c < 3; c++) rgba[4 * i + c] = data[i * d.channels + (d.channels === 1 ? 0 : c)];
    rgba[4 * i + 3] = 255;
  }
  png.data = rgba;
  return `data:image/png;base64,${PNG.sync.write(png, { colorType: d.channels === 1 ? 0 : 2 }).toString('base64')}`;
}

/** The thumbnail of an image file, or undefined when it cannot be read. */
export async function fileThumbnail(path: string, size = 64): Promise<string | undefined> {
  try {
    return await thumbnail(readWithStamp(path).bytes, path, size);
  } catch {
    return undefined;
  }
}

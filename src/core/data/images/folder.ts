/**
 * An image folder as torchvision's `ImageFolder` reads it: one subfolder per class, the classes in
 * sorted order (Python's code-point order), each class's images found by walking its folder
 * (directories in sorted order of their paths, files sorted within each), an image being a file
 * with one of torchvision's extensions. Unlike torchvision, hidden files and folders (a leading dot,
 * e.g. .ipynb_checkpoints) are skipped, and an empty class folder is a note rather than an error.
 */
import * as fs from 'node:fs';
import { join, relative } from 'node:path';
import { InfluenceError } from '../../errors';
import { fileError } from '../scan';
import { listNames, show } from '../words';

/** torchvision's IMG_EXTENSIONS. PPM, PGM and TIFF are listed as images there, and fail to decode here with a clear error. */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp'];

export function isImagePath(p: string): boolean {
  const lower = p.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

/** Python's str ordering: by code point (JavaScript's < compares UTF-16 units). */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    const sx = x >= 0xd800 && x <= 0xdfff;
    const sy = y >= 0xd800 && y <= 0xdfff;
    // A surrogate (an astral code point) sorts after every BMP code point.
    if (sx !== sy) return sx ? 1 : -1;
    return x - y;
  }
  return a.length - b.length;
}

export interface FolderListing {
  root: string;
  /** Class names in class-id order (the given names, or the sorted subfolder names). */
  classes: string[];
  /** Whether `classes` are the subfolders' names (not given). */
  fromFolders: boolean;
  /** Image paths relative to the root, with their class ids, in torchvision's order. */
  files: string[];
  labels: Int32Array;
  notes: string[];
}

function readDir(dir: string): fs.Dirent[] {
  try {
    return fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    throw fileError(e, dir);
  }
}

function isDir(dir: string, e: fs.Dirent): boolean {
  if (e.isDirectory()) return true;
  if (!e.isSymbolicLink()) return false;
  try {
    return fs.statSync(join(dir, e.name)).isDirectory();
  } catch {
    return false;
  }
}

/** The class subfolders of `root`, sorted, hidden ones left out. */
export function classFolders(root: string): string[] {
  return readDir(root)
    .filter((e) => !e.name.startsWith('.') && isDir(root, e))
    .map((e) => e.name)
    .sort(compareCodePoints);
}

/**
 * Lists an image folder. `classes`: the class names in id order (from --classes or the model),
 * else the sorted subfolder names; `numClasses`: the model's class count.
 */
export function listImageFolder(root: string, opts: { classes?: string[] | null; numClasses?: number }): FolderListing {
  const folders = classFolders(root);
  const notes: string[] = [];
  if (folders.length === 0) {
    throw new InfluenceError(
      'NO_ROWS',
      `${root} has no class subfolders: an image folder holds one folder of images per class (as torchvision's ImageFolder)`,
      { file: root },
    );
  }
  const given = opts.classes ?? null;
  const classes = given ?? folders;
  const index = new Map(classes.map((c, i) => [c.trim(), i]));
  const files: string[] = [];
  const labels: number[] = [];
  let ignored = 0;
  const ignoredExamples: string[] = [];
  for (const name of folders) {
    const id = index.get(name.trim());
    const dir = join(root, name);
    if (id === undefined) {
      throw new InfluenceError(
        'LABEL_UNKNOWN_CLASS',
        `the class folder ${show(name)} is not one of the ${classes.length} classes ${listNames(classes, 20)} (from ${opts.classes ? 'the class names given' : 'the model'}); rename it or pass --classes`,
        { file: dir },
      );
    }
    if (opts.numClasses !== undefined && id >= opts.numClasses) {
      throw new InfluenceError(
        'LABEL_OUT_OF_RANGE',
        `the class folder ${show(name)} would be class ${id}, but the model has ${opts.numClasses} classes (0..${opts.numClasses - 1}): ${root} has ${folders.length} class folders`,
        { file: dir },
      );
    }
    // Every directory under the class folder, sorted by path, and the images in each sorted by name.
    const dirs: string[] = [];
    const walk = (d: string, depth: number) => {
      dirs.push(d);
      if (depth > 64) return;
      for (const e of readDir(d)) if (!e.name.startsWith('.') && isDir(d, e)) walk(join(d, e.name), depth + 1);
    };
    walk(dir, 0);
    dirs.sort(compareCodePoints);
    const before = files.length;
    for (const d of dirs) {
      const names = readDir(d)
        .filter((e) => !e.name.startsWith('.') && !isDir(d, e))
        .map((e) => e.name)
        .sort(compareCodePoints);
      for (const f of names) {
        if (!isImagePath(f)) {
          ignored++;
          if (ignoredExamples.length < 3) ignoredExamples.push(relative(root, join(d, f)));
          continue;
        }
        files.push(relative(root, join(d, f)));
        labels.push(id);
      }
    }
    if (files.length === before)
      notes.push(`the class folder ${join(root, name)} has no images: class ${show(name)} has no rows`);
  }
  if (ignored > 0)
    notes.push(
      `${ignored} file${ignored === 1 ? '' : 's'} in ${root} without an image extension ${ignored === 1 ? 'was' : 'were'} skipped (e.g. ${ignoredExamples.join(', ')})`,
    );
  return { root, classes, fromFolders: given === null, files, labels: Int32Array.from(labels), notes };
}

/**
 * Element builders. Data only ever reaches the page as text nodes or attribute values: there is
 * no innerHTML anywhere in the panel, and no inline style or event-handler attributes (the CSP
 * forbids them); styles that depend on data are set through the CSSOM (`el.style.width = …`).
 */
import type { ImageShape } from '../src/protocol/webview';
import { thumbnailPixels } from './model';

export type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined>;

export interface Props {
  id?: string;
  class?: string;
  /** Attributes; true sets an empty attribute, false/null/undefined leave it out. */
  attrs?: Attrs;
  /** data-* attributes, e.g. { row: 57 } → data-row="57". */
  data?: Record<string, string | number>;
  on?: { [K in keyof HTMLElementEventMap]?: (e: HTMLElementEventMap[K]) => void };
}

function setAttrs(el: Element, attrs: Attrs | undefined): void {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    // Never via attributes: the CSP blocks them, and they would be a way in for data.
    if (k === 'style' || /^on/i.test(k)) throw new Error(`attribute ${k} is not allowed`);
    if (v === false || v === null || v === undefined) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
}

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

/** An HTML element with properties and children (strings become text nodes). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props | null = null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    if (props.id) el.id = props.id;
    if (props.class) el.className = props.class;
    setAttrs(el, props.attrs);
    if (props.data) for (const [k, v] of Object.entries(props.data)) el.dataset[k] = String(v);
    if (props.on) {
      for (const [type, fn] of Object.entries(props.on)) el.addEventListener(type, fn as EventListener);
    }
  }
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element; `title` adds a <title> child (the tooltip and accessible name). */
export function s<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Text for screen readers only. */
export function srOnly(text: string): HTMLSpanElement {
  return h('span', { class: 'sr-only' }, text);
}

/** A term and its value for a <dl class="facts">; `title` explains both. */
export function fact(term: string, value: Child[], title?: string): HTMLDivElement {
  return h(
    'div',
    { class: 'fact' },
    h('dt', title ? { attrs: { title } } : null, term),
    h('dd', title ? { attrs: { title } } : null, ...value),
  );
}

/**
 * A grayscale thumbnail: a canvas of the image's own size, scaled up by CSS with pixelated
 * rendering so that its longest side is `size` CSS pixels.
 */
export function thumbnail(
  features: readonly number[],
  shape: ImageShape,
  size: number,
  label: string,
  extraClass = '',
): HTMLCanvasElement {
  const canvas = h('canvas', {
    class: `thumb${extraClass ? ` ${extraClass}` : ''}`,
    attrs: { width: shape.width, height: shape.height, role: 'img', 'aria-label': label },
  });
  const scale = size / Math.max(shape.width, shape.height);
  canvas.style.width = `${Math.round(shape.width * scale)}px`;
  canvas.style.height = `${Math.round(shape.height * scale)}px`;
  const ctx = canvas.getContext('2d');
  if (ctx) {
    const img = ctx.createImageData(shape.width, shape.height);
    img.data.set(thumbnailPixels(features, shape));
    ctx.putImageData(img, 0, 0);
  }
  return canvas;
}

/**
 * The real image of a row (a PNG data URI made by the engine), scaled by CSS so that its longest
 * side is about `size` CSS pixels; small images are enlarged with pixelated rendering.
 */
export function imageThumb(src: string, size: number, label: string, extraClass = ''): HTMLImageElement {
  const img = h('img', {
    class: `thumb thumb-img${extraClass ? ` ${extraClass}` : ''}`,
    attrs: { alt: label, title: label },
  });
  // Only the engine's data URIs are shown (the CSP allows no other image source but the webview's own).
  if (src.startsWith('data:image/png;base64,')) img.src = src;
  img.style.width = `${size}px`;
  img.style.height = `${size}px`;
  return img;
}

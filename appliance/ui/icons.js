// The UI's icons: one SVG sprite, added to the page once, drawn here (24×24,
// strokes in the current colour) so they render on any machine, with or
// without an emoji font. icon('mic') gives an <svg> that uses a symbol of the
// sprite; buttons carry the accessible name (aria-label), the icon is
// decorative (aria-hidden) and repeats it as its <title> for hover.

const NS = 'http://www.w3.org/2000/svg';

// Each icon is a list of SVG elements: [tag, attributes].
const p = (d) => ['path', { d }];
const c = (cx, cy, r) => ['circle', { cx, cy, r }];
/** A cog's outline: `teeth` teeth between radius `inner` and `outer`. */
function cog(teeth, outer, inner) {
  const pts = [];
  for (let i = 0; i < teeth * 4; i++) {
    const r = i % 4 < 2 ? outer : inner;
    const a = ((i + 0.5) / (teeth * 4)) * 2 * Math.PI;
    pts.push(`${(12 + r * Math.cos(a)).toFixed(2)} ${(12 + r * Math.sin(a)).toFixed(2)}`);
  }
  return 'M' + pts.join('L') + 'z';
}

const ICONS = {
  settings: [c(12, 12, 3), p(cog(8, 9, 6.8))],
  back: [p('M19 12H5M11 6l-6 6 6 6')],
  phone: [p('M6.5 3.5h3l1.5 4-2 1.3a11 11 0 0 0 6.2 6.2l1.3-2 4 1.5v3a2 2 0 0 1-2 2A16.5 16.5 0 0 1 4.5 5.5a2 2 0 0 1 2-2z')],
  'phone-off': [p('M3 13.5c5-4.7 13-4.7 18 0l-2.3 2.6-3.4-1.4v-2.4a11 11 0 0 0-6.6 0v2.4l-3.4 1.4z')],
  members: [c(9, 8, 3.2), p('M3 19.5a6 6 0 0 1 12 0'), p('M16 5.2a3 3 0 0 1 0 5.6M18 14.2a5.5 5.5 0 0 1 3 5.3')],
  edit: [p('M4 20h4L19 9l-4-4L4 16z'), p('M13.5 6.5l4 4')],
  search: [c(10.5, 10.5, 6), p('M15 15l5.5 5.5')],
  plus: [p('M12 5v14M5 12h14')],
  reply: [p('M10 7L4 12l6 5'), p('M4 12h9a7 7 0 0 1 7 7')],
  trash: [p('M4 7h16M9.5 7V4.5h5V7M6.5 7l1 13h9l1-13'), p('M10 11v5.5M14 11v5.5')],
  close: [p('M6 6l12 12M18 6L6 18')],
  smile: [c(12, 12, 8.5), p('M8.5 14.5a4.5 4.5 0 0 0 7 0'), p('M9.2 9.6h.01M14.8 9.6h.01')],
  mic: [p('M12 3.5a3 3 0 0 1 3 3v5a3 3 0 0 1-6 0v-5a3 3 0 0 1 3-3z'), p('M6 11a6 6 0 0 0 12 0M12 17v3.5M8.5 20.5h7')],
  'mic-off': [p('M15 9.5v-3a3 3 0 0 0-5.8-1M9 9v2.5a3 3 0 0 0 4.6 2.5'), p('M6 11a6 6 0 0 0 9.6 4.8M18 11a6 6 0 0 1-.5 2.4M12 17v3.5M8.5 20.5h7'), p('M4 4l16 16')],
  camera: [['rect', { x: 3, y: 6.5, width: 12.5, height: 11, rx: 2 }], p('M15.5 10.5l5-3v9l-5-3')],
  screen: [['rect', { x: 3, y: 4.5, width: 18, height: 12, rx: 1.5 }], p('M8.5 20h7M12 16.5V20'), p('M12 13.5v-6M9.3 10.2L12 7.5l2.7 2.7')],
  hand: [p('M8 12.5V6a1.5 1.5 0 0 1 3 0v5.5M11 11V4.5a1.5 1.5 0 0 1 3 0V11M14 11V6a1.5 1.5 0 0 1 3 0v7.5a7 7 0 0 1-7 7h-.5a6 6 0 0 1-4.7-2.3L3.6 15a1.5 1.5 0 0 1 2.3-1.9L8 15.5')],
  speaker: [p('M4 9.5h3.5L12 5.5v13l-4.5-4H4z'), p('M15.5 9a4 4 0 0 1 0 6M18 6.5a7.5 7.5 0 0 1 0 11')],
  grid: [['rect', { x: 4, y: 4, width: 7, height: 7, rx: 1 }], ['rect', { x: 13, y: 4, width: 7, height: 7, rx: 1 }], ['rect', { x: 4, y: 13, width: 7, height: 7, rx: 1 }], ['rect', { x: 13, y: 13, width: 7, height: 7, rx: 1 }]],
  minimize: [p('M4 20l6-6M10 19v-5H5'), p('M20 4l-6 6M14 5v5h5')],
  maximize: [p('M10 14l-6 6M4 15v5h5'), p('M14 10l6-6M15 4h5v5')],
  fullscreen: [p('M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5')],
  eject: [p('M12 5l7 8H5z'), p('M5 18h14')],
  away: [c(12, 12, 8.5), p('M12 7.5V12l3 2')],
  more: [c(5.5, 12, 1), c(12, 12, 1), c(18.5, 12, 1)],
  send: [p('M4 12l16-8-6 16-2.5-6.5z'), p('M11.5 13.5L20 4')],
  attach: [p('M20 11.5l-8.3 8.3a5 5 0 0 1-7-7L13 4.5a3.3 3.3 0 0 1 4.7 4.7l-8.3 8.3a1.7 1.7 0 0 1-2.4-2.4l7.6-7.6')],
  folder: [p('M3.5 6.5a1.5 1.5 0 0 1 1.5-1.5h4.5l2 2.5H19a1.5 1.5 0 0 1 1.5 1.5v9a1.5 1.5 0 0 1-1.5 1.5H5a1.5 1.5 0 0 1-1.5-1.5z')],
  file: [p('M6 3.5h8l4.5 4.5v12.5H6z'), p('M14 3.5V8h4.5'), p('M9 13h6M9 16.5h6')],
  image: [['rect', { x: 3.5, y: 4.5, width: 17, height: 15, rx: 2 }], c(9, 9.5, 1.8), p('M4 17.5l5-5 4 4 2.5-2.5 5 5')],
  play: [c(12, 12, 8.5), p('M10 8.5l5.5 3.5-5.5 3.5z')],
  download: [p('M12 4v11M7 10.5l5 5 5-5'), p('M5 19.5h14')],
  upload: [p('M12 15.5V4.5M7 9l5-5 5 5'), p('M5 19.5h14')],
  lock: [['rect', { x: 5, y: 10.5, width: 14, height: 10, rx: 2 }], p('M8 10.5V8a4 4 0 0 1 8 0v2.5')],
  bell: [p('M6 16.5V11a6 6 0 0 1 12 0v5.5l1.5 1.5h-15z'), p('M10 20.5a2 2 0 0 0 4 0')],
  // a headset: the customer call
  support: [p('M4 14v-2a8 8 0 0 1 16 0v2'), ['rect', { x: 3, y: 13, width: 4, height: 6, rx: 1.5 }], ['rect', { x: 17, y: 13, width: 4, height: 6, rx: 1.5 }], p('M19 19a3 3 0 0 1-3 3h-3')],
};

let installed = false;

/** Adds the sprite to the document once (hidden, before any icon is used). */
export function installIcons() {
  if (installed) return;
  installed = true;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'sprite');
  svg.id = 'icon-sprite';
  for (const [name, shapes] of Object.entries(ICONS)) {
    const sym = document.createElementNS(NS, 'symbol');
    sym.id = 'i-' + name;
    sym.setAttribute('viewBox', '0 0 24 24');
    for (const [tag, attrs] of shapes) {
      const el = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
      sym.append(el);
    }
    svg.append(sym);
  }
  document.body.prepend(svg);
}

/** An icon of the sprite; `title` is shown on hover (the button has the name). */
export function icon(name, title) {
  if (!ICONS[name]) throw new Error(`no icon ${name}`);
  installIcons();
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('class', 'i');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.dataset.icon = name;
  if (title) {
    const t = document.createElementNS(NS, 'title');
    t.textContent = title;
    svg.append(t);
  }
  const use = document.createElementNS(NS, 'use');
  use.setAttribute('href', '#i-' + name);
  svg.append(use);
  return svg;
}

export const ICON_NAMES = Object.keys(ICONS);

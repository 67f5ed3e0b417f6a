// Safe message formatting: a small Markdown subset rendered into DOM nodes.
// ```code blocks```, `inline code`, **bold**, *italic* or _italic_, > quotes,
// http(s) links and @mentions. Nothing the sender types becomes markup.
import { h } from './dom.js';

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*)|(\b_[^_\s][^_\n]*_\b)|(https?:\/\/[^\s<>"']+)|(@[a-z0-9][a-z0-9._-]{1,31})/gi;

function inline(text, ctx) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const s = m[0];
    if (m[1]) out.push(h('code', {}, s.slice(1, -1)));
    else if (m[2]) out.push(h('strong', {}, inline(s.slice(2, -2), ctx)));
    else if (m[3] || m[4]) out.push(h('em', {}, inline(s.slice(1, -1), ctx)));
    else if (m[5]) {
      // Trailing punctuation is rarely part of a URL.
      const url = s.replace(/[.,;:!?)\]]+$/, '');
      out.push(h('a', { href: url, target: '_blank', rel: 'noopener noreferrer nofollow' }, url));
      if (url.length < s.length) out.push(s.slice(url.length));
    } else if (m[6]) {
      const name = s.slice(1).replace(/\.+$/, '').toLowerCase();
      const known = ctx.usernames?.has(name);
      const me = ctx.me && name === ctx.me;
      out.push(known ? h('span', { class: me ? 'mention me' : 'mention' }, '@' + name) : '@' + name);
      if (s.length > name.length + 1) out.push(s.slice(name.length + 1));
    }
    last = m.index + s.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/** Renders a message body to a DocumentFragment. */
export function renderBody(text, ctx = {}) {
  const frag = document.createDocumentFragment();
  const parts = text.split(/```/);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      frag.append(h('pre', {}, h('code', {}, part.replace(/^[a-z0-9+-]*\n/i, '').replace(/\n$/, ''))));
      return;
    }
    const lines = part.split('\n');
    let quote = null;
    lines.forEach((line, j) => {
      if (line.startsWith('> ') || line === '>') {
        if (!quote) { quote = h('blockquote'); frag.append(quote); }
        else quote.append(h('br'));
        quote.append(...inline(line.slice(2), ctx));
        return;
      }
      quote = null;
      frag.append(...inline(line, ctx));
      if (j < lines.length - 1) frag.append(h('br'));
    });
  });
  return frag;
}

/**
 * A message body as one line of plain text, for quotes, banners and
 * previews: the Markdown markers are dropped (`**team**` reads "team"),
 * code blocks and quotes become their text, lines are joined.
 */
export function plainText(text, max = 120) {
  const flat = text
    .replace(/```[a-z0-9+-]*\n?/gi, ' ')
    .split('\n').map((l) => l.replace(/^>\s?/, '')).join(' ')
    .replace(INLINE, (s, code, bold, em1, em2) => (code ? s.slice(1, -1) : bold ? s.slice(2, -2) : em1 || em2 ? s.slice(1, -1) : s))
    .replace(/\s+/g, ' ').trim();
  return flat.length > max ? flat.slice(0, max - 1).trimEnd() + '…' : flat;
}

/** Renders a search snippet whose hits are wrapped in \u0002 … \u0003. */
export function renderSnippet(snippet) {
  const frag = document.createDocumentFragment();
  // the markers of the formatting go, the hits stay marked
  const bare = (x) => x.replace(/\*\*|`{1,3}|(^|\s)[*_](?=\S)|(?<=\S)[*_](?=\s|$)|^>\s?/gm, '$1');
  snippet.split('\u0002').forEach((chunk, i) => {
    if (i === 0) { frag.append(bare(chunk)); return; }
    const [hit, rest = ''] = chunk.split('\u0003');
    frag.append(h('mark', {}, bare(hit)), bare(rest));
  });
  return frag;
}

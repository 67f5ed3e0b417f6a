// JSON API client. State-changing requests carry the session's CSRF token.

let csrf = '';
export function setCsrf(token) { csrf = token || ''; }
/** The session's CSRF token (the uploads send it themselves). */
export const csrfToken = () => csrf;
// The first-boot wizard's token (from the setup code), sent while set.
let setupToken = '';
export function setSetupToken(token) { setupToken = token || ''; }

export class ApiError extends Error {
  constructor(status, code, message, retryAfter, errors) {
    super(message || code);
    this.status = status; this.code = code; this.retryAfter = retryAfter;
    this.errors = errors || []; // [{key, reason}] of a 422
  }
}

export async function api(method, path, body) {
  const headers = {};
  // a File or Blob goes as it is (update bundles), anything else as JSON
  const raw = typeof Blob !== 'undefined' && body instanceof Blob;
  if (body !== undefined) headers['content-type'] = raw ? 'application/octet-stream' : 'application/json';
  if (method !== 'GET') headers['x-csrf-token'] = csrf;
  if (setupToken) headers['x-setup-token'] = setupToken;
  let res;
  try {
    res = await fetch('/api' + path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined || raw ? body : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', e.message);
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    throw new ApiError(res.status, data?.error || 'http_' + res.status, data?.message || res.statusText,
      Number(res.headers.get('retry-after')) || 0, data?.errors);
  }
  return data;
}

export const get = (p) => api('GET', p);
export const post = (p, b = {}) => api('POST', p, b);
export const patch = (p, b) => api('PATCH', p, b);
export const put = (p, b) => api('PUT', p, b);
export const del = (p) => api('DELETE', p);

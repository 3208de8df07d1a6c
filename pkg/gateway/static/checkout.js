// The idempay checkout page: a browser client that retries safely.
//
// Each action (an "Add", a "Pay") gets one key from crypto.randomUUID()
// when it is made. The key is written to localStorage, with the request,
// before the first attempt, and kept there until a definitive answer
// arrives: a network error, a 409 (the first request with the key is
// still in flight), a 202 (accepted, not answered yet) or a 503/504 is
// retried with the same key and the same body, with backoff, and so is
// every action still pending when the page is reloaded. A second click on
// Pay while a payment is pending sends that payment again with its key;
// it never makes a second payment.
//
// Every request carries the tenant's API key as Authorization: Bearer. The
// key lives in sessionStorage (this tab only, never in localStorage with
// the actions); a link ending in #api_key=... sets it and is then removed
// from the address bar and the history. A 401 or 403 keeps the action
// pending until a key is entered; a 429 waits for its Retry-After.
'use strict';

const PRODUCTS = [
  { sku: 'SKU-RED-M', name: 'Red T-shirt, M', price: 1999 },
  { sku: 'SKU-BLUE-L', name: 'Blue hoodie, L', price: 4950 },
  { sku: 'SKU-MUG', name: 'Mug', price: 900 },
];
const STORE = 'idempay.checkout.v1';
const KEY_STORE = 'idempay.checkout.apikey';
const MAX_BACKOFF_MS = 8000;
// Answers that end an action: an outcome, or a request that can never
// succeed as it is. Everything else is retried with the same key.
const FINAL = new Set([200, 201, 400, 402, 404, 413, 415, 422, 501]);

const running = new Set(); // keys with a retry loop in this tab

function freshState() {
  return { cartId: newCartId(), lines: {}, account: 'acct_web', pending: [], outcomes: [] };
}

function newCartId() {
  return 'cart_' + crypto.randomUUID().slice(0, 8);
}

function loadState() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE));
    if (s && s.cartId && Array.isArray(s.pending)) return s;
  } catch (e) { /* a broken entry: start afresh */ }
  return freshState();
}

let state = loadState();

// The API key: from the link's fragment (once), else from this tab.
(function takeKeyFromLink() {
  const m = /(?:^#|&)api_key=([^&]+)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(KEY_STORE, decodeURIComponent(m[1]));
  history.replaceState(null, '', location.pathname + location.search);
})();

function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || '';
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(state));
}

function euros(cents) {
  return '€' + (cents / 100).toFixed(2);
}

function price(sku) {
  return PRODUCTS.find((p) => p.sku === sku)?.price ?? 0;
}

function total() {
  return Object.entries(state.lines).reduce((sum, [sku, qty]) => sum + price(sku) * qty, 0);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// newAction records an action with its key before anything is sent, so a
// reload or a crash between here and the answer retries the same key.
function newAction(kind, label, url, body) {
  const action = { key: crypto.randomUUID(), kind, label, url, body, attempts: 0, note: '', created: Date.now() };
  state.pending.push(action);
  save();
  return action;
}

function isPending(action) {
  return state.pending.some((a) => a.key === action.key);
}

// send makes one attempt. It returns {done: true, ...} for a definitive
// answer, else {done: false, wait} with the server's Retry-After if any.
async function send(action) {
  action.attempts++;
  save();
  render();
  let resp;
  try {
    const headers = { 'Content-Type': 'application/json', 'Idempotency-Key': action.key };
    if (apiKey()) headers.Authorization = 'Bearer ' + apiKey();
    resp = await fetch(action.url, { method: 'POST', headers, body: JSON.stringify(action.body) });
  } catch (e) {
    action.note = 'network error (' + e.message + '); retrying with the same key';
    save();
    render();
    return { done: false };
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  const replayed = resp.headers.get('Idempotent-Replayed') === 'true';
  if (FINAL.has(resp.status)) {
    return { done: true, status: resp.status, body, replayed };
  }
  const retryAfter = Number(resp.headers.get('Retry-After'));
  if (resp.status === 401 || resp.status === 403) {
    // Not sent: wait for a key (saving one sends every pending action).
    action.note = 'HTTP ' + resp.status + (body && body.code ? ' ' + body.code : '') + ': enter the API key above; kept pending with its key';
    save();
    render();
    return { done: false, wait: MAX_BACKOFF_MS };
  }
  action.note = 'HTTP ' + resp.status + (body && body.code ? ' ' + body.code : '') + '; retrying with the same key';
  save();
  render();
  return { done: false, wait: retryAfter > 0 ? retryAfter * 1000 : undefined };
}

// run retries an action with backoff until it has an answer. One loop per
// key per tab; another tab or a kick may finish the action first.
async function run(action) {
  if (running.has(action.key)) return;
  running.add(action.key);
  let backoff = 250;
  try {
    while (isPending(action)) {
      const r = await send(action);
      if (r.done) {
        finish(action, r);
        return;
      }
      const jitter = backoff * (0.5 + Math.random() / 2);
      await sleep(Math.min(r.wait ?? jitter, MAX_BACKOFF_MS));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    }
  } finally {
    running.delete(action.key);
  }
}

// kick sends a pending action once more, now, with its key.
async function kick(action) {
  const r = await send(action);
  if (r.done) finish(action, r);
}

function finish(action, r) {
  if (!isPending(action)) return; // answered already (by the loop or a kick)
  state.pending = state.pending.filter((a) => a.key !== action.key);
  const b = r.body || {};
  const outcome = {
    key: action.key, kind: action.kind, label: action.label, http: r.status, replayed: r.replayed,
    attempts: action.attempts, code: b.code || '', detail: '', at: Date.now(),
  };
  if (r.status === 201 && action.kind === 'cart.add') {
    state.lines[b.data.sku] = b.data.quantity;
    outcome.detail = b.data.sku + ' now ' + b.data.quantity + ' in the cart';
  } else if (r.status === 201 && action.kind === 'payment.charge') {
    outcome.detail = 'charged ' + euros(b.data.amount) + ' as ' + b.data.charge_id;
    // The cart is paid: the next Pay is another payment, of another cart.
    state.cartId = newCartId();
    state.lines = {};
  } else {
    outcome.detail = b.detail || b.title || '';
  }
  state.outcomes.unshift(outcome);
  state.outcomes = state.outcomes.slice(0, 20);
  save();
  render();
}

function addItem(sku) {
  const body = { sku, quantity: 1 };
  const action = newAction('cart.add', 'Add ' + sku, '/v1/carts/' + encodeURIComponent(state.cartId) + '/items', body);
  run(action);
}

function pay() {
  const pending = state.pending.find((a) => a.kind === 'payment.charge');
  if (pending) {
    // A second click (a double click, an impatient user): the same
    // payment again, with its key.
    kick(pending);
    return;
  }
  const amount = total();
  if (amount === 0) return;
  state.account = document.getElementById('account').value.trim();
  const body = { account_id: state.account, amount, currency: 'EUR', description: 'cart ' + state.cartId };
  run(newAction('payment.charge', 'Pay ' + euros(amount), '/v1/payments', body));
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('data-') || k === 'id' || k === 'class') e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function render() {
  document.getElementById('key-state').textContent = apiKey() ? 'set (' + apiKey().length + ' characters)' : 'none: requests get 401';
  document.getElementById('cart-id').textContent = state.cartId;
  const products = document.getElementById('products');
  if (!products.hasChildNodes()) {
    for (const p of PRODUCTS) {
      const add = el('button', { id: 'add-' + p.sku, onclick: () => addItem(p.sku) }, 'Add');
      products.append(el('tr', {}, el('td', {}, p.name), el('td', { class: 'num' }, euros(p.price)), el('td', { class: 'num' }, add)));
    }
  }
  const cart = document.getElementById('cart');
  cart.replaceChildren();
  for (const [sku, qty] of Object.entries(state.lines)) {
    cart.append(el('tr', { 'data-sku': sku }, el('td', {}, sku), el('td', { class: 'num' }, '× ' + qty), el('td', { class: 'num' }, euros(price(sku) * qty))));
  }
  if (!cart.hasChildNodes()) cart.append(el('tr', {}, el('td', { class: 'muted' }, 'empty')));
  document.getElementById('cart-total').textContent = euros(total());
  const payPending = state.pending.some((a) => a.kind === 'payment.charge');
  const payBtn = document.getElementById('pay');
  payBtn.textContent = payPending ? 'Paying…' : 'Pay';
  payBtn.disabled = total() === 0 && !payPending;

  const pending = document.getElementById('pending');
  pending.replaceChildren();
  for (const a of state.pending) {
    pending.append(el('li', { 'data-key': a.key, 'data-kind': a.kind },
      el('span', { class: 'badge wait' }, '…'), a.label + ', attempt ' + a.attempts + (a.note ? ': ' + a.note : ''),
      el('div', { class: 'key' }, 'Idempotency-Key ' + a.key)));
  }
  if (!pending.hasChildNodes()) pending.append(el('li', { class: 'muted' }, 'nothing'));

  const outcomes = document.getElementById('outcomes');
  outcomes.replaceChildren();
  for (const o of state.outcomes) {
    const ok = o.http === 200 || o.http === 201;
    const li = el('li', {
      class: 'outcome', 'data-key': o.key, 'data-kind': o.kind, 'data-status': String(o.http),
      'data-code': o.code, 'data-replayed': String(o.replayed),
    }, el('span', { class: 'badge ' + (ok ? 'ok' : 'bad') }, String(o.http)), o.label + ': ' + (o.code || 'succeeded') + (o.detail ? ', ' + o.detail : ''));
    if (o.replayed) li.append(' ', el('span', { class: 'badge replayed' }, 'replayed'));
    li.append(el('div', { class: 'key' }, 'Idempotency-Key ' + o.key + ', ' + o.attempts + ' attempt(s)'));
    outcomes.append(li);
  }
  if (!outcomes.hasChildNodes()) outcomes.append(el('li', { class: 'muted' }, 'none yet'));
}

function saveKey() {
  const k = document.getElementById('api-key').value.trim();
  if (k) sessionStorage.setItem(KEY_STORE, k);
  else sessionStorage.removeItem(KEY_STORE);
  document.getElementById('api-key').value = '';
  render();
  state.pending.forEach(kick);
}

document.getElementById('pay').addEventListener('click', pay);
document.getElementById('save-key').addEventListener('click', saveKey);
document.getElementById('account').value = state.account;
window.addEventListener('online', () => state.pending.forEach(kick));
render();
// Actions left pending by an earlier visit: the same keys, sent again.
for (const a of state.pending) run(a);

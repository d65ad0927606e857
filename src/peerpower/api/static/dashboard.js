// peerpower live dashboard: reads the JSON API of this server and follows its /stream WebSocket.
// Written for this project; no third-party code. Every value from the chain is put in the page as
// text (never as markup).
"use strict";

(function () {
  const MAX_LADDERS = 4; // slots shown, nearest first
  const MAX_BLOCKS = 10;
  const POLL_MS = 5000; // fallback refresh of everything
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const JST_OFFSET_MS = 9 * 3600 * 1000;
  const STORE_KEY = "peerpower.account";

  const S = {
    chain: null,
    height: -1,
    timeMs: null,
    books: new Map(), // slot -> {slot, status, orders, rows}
    bookGen: 0, // counts book events, to keep newer ones over an older poll
    bookSeen: new Map(), // slot -> bookGen of its last event
    clearing: null,
    pricesDay: "", // "" = the chain's day
    blocks: [],
    scanned: new Set(), // heights whose transactions were read for account ids
    accounts: new Set(),
    account: "",
    accountMissing: false,
    ws: null,
    backoff: BACKOFF_MIN_MS,
    wsTimer: 0,
    refreshing: false,
    timers: new Map(),
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers ------------------------------------------------------------------------
  function el(tag, attrs, ...kids) {
    return build(document.createElement(tag), attrs, kids);
  }

  function svg(tag, attrs, ...kids) {
    // the SVG namespace, taken from the chart element of the page
    return build(document.createElementNS($("prices").namespaceURI, tag), attrs, kids);
  }

  function build(node, attrs, kids) {
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
      }
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }

  function later(key, fn, ms) {
    if (S.timers.has(key)) return;
    S.timers.set(
      key,
      setTimeout(() => {
        S.timers.delete(key);
        fn();
      }, ms),
    );
  }

  // ---- units and formats ------------------------------------------------------------------
  const pad2 = (n) => String(n).padStart(2, "0");

  function kwh(wh) {
    if (wh === null || wh === undefined) return "—";
    return (wh / 1000).toFixed(wh % 100 === 0 ? 1 : 3);
  }

  function yenPerKwh(sen) {
    return sen === null || sen === undefined ? "—" : (sen / 100).toFixed(2);
  }

  function money(microyen) {
    if (microyen === null || microyen === undefined) return "—";
    const yen = microyen / 1e6;
    const whole = Math.abs(microyen) % 10000 === 0; // no fraction of a sen lost below
    return yen.toLocaleString("en-US", {
      minimumFractionDigits: 2,
      maximumFractionDigits: whole ? 2 : 6,
    });
  }

  const yen = (microyen) => (microyen === null || microyen === undefined ? "—" : "¥" + money(microyen));

  function jstTime(ms) {
    const iso = new Date(ms + JST_OFFSET_MS).toISOString(); // shifted: read as JST wall clock
    return iso.slice(0, 10) + " " + iso.slice(11, 19);
  }

  const jstClock = (ms) => new Date(ms + JST_OFFSET_MS).toISOString().slice(11, 19);
  const jstDay = (ms) => new Date(ms + JST_OFFSET_MS).toISOString().slice(0, 10);

  function slotParts(slot) {
    const m = /^(\d{4}-\d{2}-\d{2})#(\d{2})$/.exec(slot || "");
    return m ? { day: m[1], index: Number(m[2]) } : null;
  }

  function slotStartMs(slot) {
    const p = slotParts(slot);
    if (!p) return null;
    const [y, mo, d] = p.day.split("-").map(Number);
    return Date.UTC(y, mo - 1, d) - JST_OFFSET_MS + p.index * 1800 * 1000;
  }

  function hhmm(index) {
    const minutes = index * 30;
    return pad2(Math.floor(minutes / 60)) + ":" + pad2(minutes % 60);
  }

  function slotTime(slot) {
    const p = slotParts(slot);
    return p ? hhmm(p.index) + "–" + hhmm(p.index + 1) : slot;
  }

  function slotTitle(slot) {
    const p = slotParts(slot);
    return p ? `${p.day} ${slotTime(slot)}` : slot;
  }

  // ---- the API ----------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(message, status, problem) {
      super(message);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(path) {
    const r = await fetch(path, { headers: { accept: "application/json" }, cache: "no-store" });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const detail = body && body.detail ? body.detail : `${r.status} ${r.statusText}`;
      throw new ApiError(detail, r.status, body);
    }
    return body;
  }

  const enc = encodeURIComponent;

  // ---- header -----------------------------------------------------------------------------
  function setHeight(height, timeMs) {
    if (height < S.height) return;
    S.height = height;
    $("height").textContent = String(height);
    document.body.dataset.height = String(height);
    if (timeMs !== null && timeMs !== undefined) {
      S.timeMs = timeMs;
      $("chain-time").textContent = jstTime(timeMs);
    }
  }

  function applyStatus(st) {
    if (S.chain !== null && (st.chain !== S.chain || st.height < S.height)) reset();
    if (st.height < S.height) return;
    S.chain = st.chain;
    $("chain").textContent = st.chain;
    $("chain").title = `transactions carry chain ${st.tx_chain}; validator ${st.validator}`;
    $("mempool").textContent = String(st.mempool);
    setHeight(st.height, st.time_ms);
  }

  function reset() {
    // another chain (or a restarted one) behind the same address: forget what was shown
    S.height = -1;
    S.books.clear();
    S.bookSeen.clear();
    S.clearing = null;
    S.blocks = [];
    S.scanned.clear();
    document.body.dataset.cleared = "";
    renderLadders();
    renderBlocks();
  }

  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text || state;
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  function touched() {
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  // ---- ladders ----------------------------------------------------------------------------
  const isOpen = (status) => status === "open" || status === "sealed";

  function showable(book) {
    // A slot settled void (never cleared) leaves the chain with a last book event saying
    // "open": a slot that has started cannot take orders, so it is not shown either.
    const start = slotStartMs(book.slot);
    return isOpen(book.status) && !(S.timeMs !== null && start !== null && start <= S.timeMs);
  }

  function setBook(book) {
    S.bookGen += 1;
    S.bookSeen.set(book.slot, S.bookGen);
    if (showable(book)) S.books.set(book.slot, book);
    else S.books.delete(book.slot);
  }

  function renderLadders() {
    const box = $("ladders");
    const slots = [...S.books.keys()].sort().slice(0, MAX_LADDERS);
    if (!slots.length) {
      box.replaceChildren(el("p", { class: "empty" }, "No open slots."));
      return;
    }
    const old = new Map();
    const scrolls = new Map();
    for (const card of box.querySelectorAll(".ladder-card")) {
      old.set(card.dataset.slot, card);
      scrolls.set(card.dataset.slot, card.querySelector(".ladder-scroll").scrollTop);
    }
    const same = old.size === slots.length && [...old.keys()].every((s, i) => s === slots[i]);
    const cards = slots.map((slot) => ladderCard(S.books.get(slot), old.get(slot)));
    if (same) return; // changed cards were replaced in place
    box.replaceChildren(...cards);
    for (const card of cards) {
      const top = scrolls.get(card.dataset.slot);
      if (top) card.querySelector(".ladder-scroll").scrollTop = top;
    }
  }

  function ladderCard(book, card) {
    const key = JSON.stringify([book.status, book.orders, book.rows]);
    if (card && card.dataset.key === key) return card;
    const scroller = card ? card.querySelector(".ladder-scroll") : null;
    const keepScroll = scroller ? scroller.scrollTop : null;

    const rows = book.rows || [];
    let bestAsk = null;
    let bestBid = null;
    let most = 0;
    for (const r of rows) {
      if (r.price_sen_per_kwh !== null) {
        if (r.sell_wh > 0 && (bestAsk === null || r.price_sen_per_kwh < bestAsk)) {
          bestAsk = r.price_sen_per_kwh;
        }
        if (r.buy_wh > 0 && (bestBid === null || r.price_sen_per_kwh > bestBid)) {
          bestBid = r.price_sen_per_kwh;
        }
      }
      most = Math.max(most, r.sell_wh, r.buy_wh);
    }
    const crossed = bestAsk !== null && bestBid !== null && bestAsk <= bestBid;

    const body = el("tbody");
    let anchor = null;
    for (const r of rows) {
      const p = r.price_sen_per_kwh;
      const cls = ["level"];
      if (r.label) cls.push(r.label.toLowerCase());
      if (p !== null && p === bestAsk) cls.push("best-ask");
      if (p !== null && p === bestBid) cls.push("best-bid");
      if (crossed && p !== null && p >= bestAsk && p <= bestBid) cls.push("crossed");
      const tr = el(
        "tr",
        { class: cls.join(" "), "data-price": p === null ? null : p, "data-label": r.label },
        depthCell("sell", r.sell_wh, most),
        el("td", { class: "price" }, p === null ? r.label : yenPerKwh(p)),
        depthCell("buy", r.buy_wh, most),
      );
      body.append(tr);
      if (p !== null && (p === bestAsk || (bestAsk === null && p === bestBid))) anchor = tr;
    }
    if (!rows.length) {
      body.append(el("tr", { class: "none" }, el("td", { colspan: 3 }, "no orders")));
    }
    const table = el(
      "table",
      { class: "ladder", "data-slot": book.slot, "data-status": book.status },
      el(
        "thead",
        null,
        el(
          "tr",
          null,
          el("th", { class: "sell" }, "SELL kWh"),
          el("th", { class: "price" }, "¥/kWh"),
          el("th", { class: "buy" }, "BUY kWh"),
        ),
      ),
      body,
    );
    const spread =
      bestAsk !== null && bestBid !== null
        ? crossed
          ? "crossed"
          : `spread ¥${yenPerKwh(bestAsk - bestBid)}`
        : "";
    const fresh = el(
      "article",
      { class: "ladder-card", "data-slot": book.slot, "data-status": book.status },
      el(
        "header",
        null,
        el("h3", null, slotTitle(book.slot)),
        el("span", { class: `badge status-${book.status}` }, book.status),
      ),
      el(
        "p",
        { class: "meta" },
        el("span", { class: "slot-id" }, book.slot),
        el("span", null, `${book.orders} order${book.orders === 1 ? "" : "s"}`),
        spread ? el("span", { class: crossed ? "crossed-note" : "" }, spread) : null,
      ),
      el("div", { class: "ladder-scroll" }, table),
    );
    fresh.dataset.key = key;
    if (card) {
      card.replaceWith(fresh);
    }
    const sc = fresh.querySelector(".ladder-scroll");
    requestAnimationFrame(() => {
      if (keepScroll !== null) sc.scrollTop = keepScroll;
      else if (anchor) sc.scrollTop = Math.max(0, anchor.offsetTop - sc.clientHeight / 2);
    });
    return fresh;
  }

  function depthCell(side, wh, most) {
    const td = el("td", { class: side });
    if (wh > 0) {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${Math.max(2, (100 * wh) / (most || 1)).toFixed(1)}%`;
      td.append(bar, el("span", { class: "qty" }, kwh(wh)));
    }
    return td;
  }

  // ---- the last clearing ------------------------------------------------------------------
  function renderClearing(c) {
    S.clearing = c;
    const units = c.balanced_units || [];
    noteAccounts(units.flatMap((u) => [u.seller, u.buyer]));
    const table = $("units");
    table.dataset.slot = c.slot;
    const body = el("tbody");
    for (const u of units) {
      body.append(
        el(
          "tr",
          { class: "unit", "data-seller": u.seller, "data-buyer": u.buyer },
          el("td", { class: "seller" }, accountLink(u.seller)),
          el("td", { class: "buyer" }, accountLink(u.buyer)),
          el("td", { class: "sell-order mono" }, u.sell_order),
          el("td", { class: "buy-order mono" }, u.buy_order),
          el("td", { class: "energy num" }, kwh(u.energy_wh)),
          el("td", { class: "price num" }, yenPerKwh(u.price_sen_per_kwh)),
          el("td", { class: "fee num" }, yenPerKwh(u.fee_sen_per_kwh)),
          el("td", { class: "buyer-price num" }, yenPerKwh(u.buyer_price_sen_per_kwh)),
        ),
      );
    }
    if (!units.length) {
      body.append(el("tr", { class: "none" }, el("td", { colspan: 8 }, "no balanced units")));
    }
    table.tBodies[0].replaceWith(body);
    $("units-slot").textContent = `${c.slot} · ${slotTime(c.slot)}`;
    const range =
      c.min_price_sen_per_kwh === null
        ? ""
        : ` (¥${yenPerKwh(c.min_price_sen_per_kwh)}–${yenPerKwh(c.max_price_sen_per_kwh)})`;
    const paid =
      c.mean_buyer_price_sen_per_kwh === null || c.mean_buyer_price_sen_per_kwh === undefined
        ? ""
        : `, buyers pay ¥${yenPerKwh(c.mean_buyer_price_sen_per_kwh)}/kWh`;
    const nodes = c.node_prices_sen_per_kwh ? Object.keys(c.node_prices_sen_per_kwh).length : 0;
    $("units-summary").textContent =
      `${c.units} unit${c.units === 1 ? "" : "s"} · ${kwh(c.volume_wh)} kWh · sellers get ` +
      `¥${yenPerKwh(c.mean_price_sen_per_kwh)}/kWh${range}${paid} · ` +
      `${pricingText(c.pricing, nodes)} · block ${c.height}`;
    document.body.dataset.cleared = c.slot;
  }

  function pricingText(pricing, nodes) {
    if (pricing === "nodal") {
      return `nodal pricing (one price per grid node${nodes ? `, ${nodes} nodes` : ""})`;
    }
    if (pricing === "midpoint") return "midpoint pricing (each unit at its spread's midpoint)";
    if (pricing === "resting") return "continuous (each trade at the resting order's price)";
    return "pricing " + String(pricing);
  }

  function accountLink(id) {
    const a = el("a", { href: "#account=" + enc(id), class: "acct" }, id);
    return a;
  }

  async function loadLastClearing(slots) {
    let last = null;
    for (const s of slots) {
      if ((s.status === "cleared" || s.status === "settled") && (!last || s.slot > last)) {
        last = s.slot;
      }
    }
    if (!last || (S.clearing && S.clearing.slot >= last)) return;
    try {
      const c = await api(`/slots/${enc(last)}/clearing`);
      if (!S.clearing || c.slot > S.clearing.slot) renderClearing(c);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e; // not kept any more: nothing to show
    }
  }

  // ---- the price chart --------------------------------------------------------------------
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 2.5, 5, 10]) if (f * mag >= raw) return f * mag;
    return 10 * mag;
  }

  function priceTicks(lo, hi) {
    if (hi - lo < 1e-9) {
      lo -= 1;
      hi += 1;
    }
    const step = niceStep(hi - lo, 4);
    const start = Math.floor(lo / step) * step;
    const end = Math.ceil(hi / step) * step;
    const out = [];
    for (let v = start; v <= end + step / 2; v += step) out.push(Math.round(v * 1000) / 1000);
    return out;
  }

  function drawPrices(data) {
    const chart = $("prices");
    const W = 760;
    const H = 300;
    const m = { l: 56, r: 56, t: 24, b: 36 };
    const pw = W - m.l - m.r;
    const ph = H - m.t - m.b;
    const bottom = m.t + ph;
    const xAt = (i) => m.l + (i / 48) * pw;
    const slotW = pw / 48;

    const points = [];
    for (const p of data.points || []) {
      const parts = slotParts(p.slot);
      if (parts) points.push({ ...p, index: parts.index });
    }
    points.sort((a, b) => a.index - b.index);
    chart.dataset.day = data.day;
    chart.dataset.points = String(points.length);
    $("prices-day").textContent = data.day;
    if (!S.pricesDay) $("price-day").value = data.day;

    let lo = Infinity;
    let hi = -Infinity;
    let vmax = 0;
    for (const p of points) {
      if (p.min_price_sen_per_kwh !== null) {
        lo = Math.min(lo, p.min_price_sen_per_kwh / 100);
        hi = Math.max(hi, p.max_price_sen_per_kwh / 100);
      }
      vmax = Math.max(vmax, p.volume_wh / 1000);
    }
    if (!Number.isFinite(lo)) {
      lo = 10;
      hi = 30;
    }
    const ticks = priceTicks(lo, hi);
    const y0 = ticks[0];
    const y1 = ticks[ticks.length - 1];
    const yAt = (v) => bottom - ((v - y0) / (y1 - y0)) * ph;
    const n = ticks.length - 1;
    const vstep = niceStep(vmax || 1, n);
    const vtop = vstep * n;
    const vAt = (v) => bottom - (v / vtop) * ph;
    const decimals = (step) => (step >= 1 ? 0 : step >= 0.1 ? 1 : 2);

    const grid = svg("g", { class: "grid" });
    const axes = svg("g", { class: "axes" });
    ticks.forEach((v, k) => {
      const y = yAt(v);
      grid.append(svg("line", { x1: m.l, x2: W - m.r, y1: y, y2: y }));
      axes.append(
        svg("text", { class: "tick y", x: m.l - 8, y: y + 4, "text-anchor": "end" }, v.toFixed(2)),
        svg(
          "text",
          { class: "tick v", x: W - m.r + 8, y: y + 4, "text-anchor": "start" },
          (vstep * k).toFixed(decimals(vstep)),
        ),
      );
    });
    for (let i = 0; i <= 48; i += 6) {
      const x = xAt(i);
      grid.append(svg("line", { class: "vgrid", x1: x, x2: x, y1: m.t, y2: bottom }));
      axes.append(
        svg("line", { class: "tickmark", x1: x, x2: x, y1: bottom, y2: bottom + 5 }),
        svg("text", { class: "tick x", x, y: bottom + 18, "text-anchor": "middle" }, hhmm(i)),
      );
    }
    axes.append(
      svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: bottom, y2: bottom }),
      svg("text", { class: "axis-title", x: m.l - 8, y: m.t - 10, "text-anchor": "end" }, "¥/kWh"),
      svg("text", { class: "axis-title", x: W - m.r + 8, y: m.t - 10 }, "kWh"),
      svg(
        "text",
        { class: "axis-title", x: m.l + pw / 2, y: H - 2, "text-anchor": "middle" },
        "time of day (JST)",
      ),
    );

    const vol = svg("g", { class: "volume" });
    const ranges = svg("g", { class: "range" });
    const dots = svg("g", { class: "points" });
    const hits = svg("g", { class: "hits" });
    let solid = "";
    let gaps = "";
    let prev = null;
    for (const p of points) {
      const x = xAt(p.index + 0.5);
      const kw = p.volume_wh / 1000;
      if (kw > 0) {
        vol.append(
          svg("rect", {
            class: "vol",
            "data-slot": p.slot,
            x: xAt(p.index) + 1.5,
            width: Math.max(1, slotW - 3),
            y: vAt(kw),
            height: Math.max(0, bottom - vAt(kw)),
          }),
        );
      }
      const mean = p.mean_price_sen_per_kwh;
      if (mean !== null) {
        const ymin = yAt(p.min_price_sen_per_kwh / 100);
        const ymax = yAt(p.max_price_sen_per_kwh / 100);
        ranges.append(
          svg("line", { class: "range-bar", x1: x, x2: x, y1: ymax, y2: ymin }),
          svg("line", { class: "cap", x1: x - 3, x2: x + 3, y1: ymax, y2: ymax }),
          svg("line", { class: "cap", x1: x - 3, x2: x + 3, y1: ymin, y2: ymin }),
        );
        const y = yAt(mean / 100);
        if (prev === null) solid += `M${x.toFixed(1)},${y.toFixed(1)}`;
        else if (p.index === prev.index + 1) solid += `L${x.toFixed(1)},${y.toFixed(1)}`;
        else {
          gaps += `M${prev.x.toFixed(1)},${prev.y.toFixed(1)}L${x.toFixed(1)},${y.toFixed(1)}`;
          solid += `M${x.toFixed(1)},${y.toFixed(1)}`;
        }
        prev = { index: p.index, x, y };
        dots.append(svg("circle", { class: "point", "data-slot": p.slot, cx: x, cy: y, r: 3.5 }));
      }
      const tip =
        `${p.slot} · ${slotTime(p.slot)}\n` +
        (mean === null
          ? "no trades"
          : `mean ¥${yenPerKwh(mean)}/kWh (min ${yenPerKwh(p.min_price_sen_per_kwh)}, ` +
            `max ${yenPerKwh(p.max_price_sen_per_kwh)})`) +
        `\n${kwh(p.volume_wh)} kWh in ${p.units} unit${p.units === 1 ? "" : "s"}`;
      hits.append(
        svg(
          "rect",
          { class: "hit", "data-slot": p.slot, x: xAt(p.index), width: slotW, y: m.t, height: ph },
          svg("title", null, tip),
        ),
      );
    }
    const layers = [grid, vol, ranges];
    if (gaps) layers.push(svg("path", { class: "mean gap", d: gaps }));
    if (solid) layers.push(svg("path", { class: "mean", d: solid }));
    layers.push(dots);
    if (S.timeMs !== null && jstDay(S.timeMs) === data.day) {
      const [h, mi, sec] = jstClock(S.timeMs).split(":").map(Number);
      const x = xAt((h * 3600 + mi * 60 + sec) / 1800);
      layers.push(
        svg(
          "g",
          { class: "now" },
          svg("line", { x1: x, x2: x, y1: m.t, y2: bottom }),
          svg("text", { x: x + 4, y: m.t + 10 }, "now"),
        ),
      );
    }
    if (!points.length) {
      layers.push(
        svg(
          "text",
          { class: "empty", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle" },
          `No cleared slots on ${data.day}`,
        ),
      );
    }
    layers.push(axes, hits);
    chart.replaceChildren(...layers);
  }

  async function loadPrices() {
    const day = S.pricesDay;
    const data = await api(day ? `/prices?day=${enc(day)}` : "/prices");
    if (day === S.pricesDay) drawPrices(data);
  }

  // ---- recent blocks ----------------------------------------------------------------------
  function addBlocks(list) {
    const byHeight = new Map(S.blocks.map((b) => [b.height, b]));
    for (const b of list) {
      byHeight.set(b.height, {
        height: b.height,
        hash: b.hash,
        txs: b.txs,
        time_ms: b.time_ms,
        proposer: b.proposer,
      });
    }
    S.blocks = [...byHeight.values()].sort((a, b) => b.height - a.height).slice(0, MAX_BLOCKS);
    renderBlocks();
    for (const b of S.blocks) if (b.txs > 0) scanBlock(b.height);
  }

  function renderBlocks() {
    const body = el("tbody");
    for (const b of S.blocks) {
      body.append(
        el(
          "tr",
          { class: "block", "data-height": b.height },
          el("td", { class: "height num" }, b.height),
          el("td", { class: "time" }, jstTime(b.time_ms)),
          el("td", { class: "txs num" }, b.txs),
          el("td", { class: "proposer" }, b.proposer || "—"),
          el("td", { class: "hash mono", title: b.hash }, (b.hash || "").slice(0, 10) + "…"),
        ),
      );
    }
    if (!S.blocks.length) {
      body.append(el("tr", { class: "none" }, el("td", { colspan: 5 }, "no blocks yet")));
    }
    $("blocks").tBodies[0].replaceWith(body);
  }

  // account ids seen in committed transactions, for the participant picker
  const scanQueue = [];
  let scanning = false;

  function scanBlock(height) {
    if (S.scanned.has(height)) return;
    S.scanned.add(height);
    scanQueue.push(height);
    if (!scanning) drainScans();
  }

  async function drainScans() {
    scanning = true;
    try {
      while (scanQueue.length) {
        const height = scanQueue.shift();
        try {
          const block = await api(`/blocks/${height}`);
          const ids = [];
          for (const tx of block.txs || []) {
            const body = (tx && tx.body) || {};
            for (const k of ["from", "account", "site"]) {
              if (typeof body[k] === "string") ids.push(body[k]);
            }
          }
          noteAccounts(ids);
        } catch (_) {
          // the block is no longer kept, or the server is away: the picker can do without
        }
      }
    } finally {
      scanning = false;
    }
  }

  function noteAccounts(ids) {
    let changed = false;
    for (const id of ids) {
      if (id && !S.accounts.has(id)) {
        S.accounts.add(id);
        changed = true;
      }
    }
    if (!changed) return;
    const list = $("account-list");
    list.replaceChildren(...[...S.accounts].sort().map((id) => el("option", { value: id })));
  }

  // ---- the participant view ---------------------------------------------------------------
  function accountFromHash() {
    const m = /(?:^#|&)account=([^&]*)/.exec(location.hash);
    if (!m) return null;
    try {
      return decodeURIComponent(m[1]);
    } catch (_) {
      return null;
    }
  }

  function remember(id) {
    const hash = id ? "#account=" + enc(id) : "";
    if (location.hash !== hash) {
      history.replaceState(null, "", location.pathname + location.search + hash);
    }
    try {
      if (id) localStorage.setItem(STORE_KEY, id);
      else localStorage.removeItem(STORE_KEY);
    } catch (_) {
      // storage off (private mode): the URL keeps it
    }
  }

  function chooseAccount(id) {
    id = (id || "").trim();
    S.account = id;
    $("account-id").value = id;
    remember(id);
    if (!id) {
      $("account").hidden = true;
      $("account-error").hidden = true;
      return;
    }
    loadAccount(false);
  }

  async function loadAccount(quiet) {
    const id = S.account;
    if (!id || (quiet && S.accountMissing)) return; // an unknown id is asked again on "show"
    S.accountMissing = false;
    const err = $("account-error");
    try {
      const a = await api(`/accounts/${enc(id)}`);
      if (id !== S.account) return;
      err.hidden = true;
      renderAccount(a);
    } catch (e) {
      if (id !== S.account) return;
      if (e instanceof ApiError) {
        S.accountMissing = e.status === 404;
        err.textContent = e.message;
        err.hidden = false;
        $("account").hidden = true;
        $("account").dataset.account = "";
      } else if (!quiet) {
        err.textContent = `could not reach the API: ${e.message}`;
        err.hidden = false;
      }
    }
  }

  function renderAccount(a) {
    const box = $("account");
    box.dataset.account = a.id;
    box.hidden = false;
    $("acct-id").textContent = a.id;
    $("acct-kind").textContent = a.kind;
    $("acct-status").textContent = a.status;
    $("acct-status").dataset.status = a.status;
    $("acct-balance").textContent = yen(a.balance_microyen);
    $("acct-balance").title = `${a.balance_microyen} µ¥`;
    $("acct-margin").textContent = yen(a.margin_microyen);
    $("acct-margin").title = `${a.margin_microyen} µ¥ locked for open orders and contracts`;
    $("acct-unpaid").textContent = yen(a.unpaid_microyen);
    $("acct-defaults").textContent = String(a.defaults);
    $("acct-nonce").textContent = String(a.nonce);

    fill(
      "account-orders",
      6,
      "no open orders",
      (a.orders || []).map((o) =>
        el(
          "tr",
          { class: `order side-${o.side}`, "data-order": o.id, "data-slot": o.slot },
          el("td", { class: "mono" }, o.id),
          el("td", { title: slotTitle(o.slot) }, o.slot),
          el("td", { class: `side ${o.side}` }, o.side),
          el("td", { class: "num" }, kwh(o.energy_wh)),
          el("td", { class: "num" }, yenPerKwh(o.price_sen_per_kwh)),
          el("td", { class: "num" }, money(o.margin_microyen)),
        ),
      ),
    );
    fill(
      "account-contracts",
      7,
      "no contracts",
      (a.contracts || []).map((c) => {
        const selling = c.seller === a.id;
        return el(
          "tr",
          { class: "contract", "data-slot": c.slot },
          el("td", { title: slotTitle(c.slot) }, c.slot),
          el("td", { class: `side ${selling ? "sell" : "buy"}` }, selling ? "seller" : "buyer"),
          el("td", null, accountLink(selling ? c.buyer : c.seller)),
          el("td", { class: "num" }, kwh(c.energy_wh)),
          el("td", { class: "num" }, yenPerKwh(c.price_sen_per_kwh)),
          el("td", { class: "num" }, yenPerKwh(c.fee_sen_per_kwh)),
          el("td", { class: "num" }, yenPerKwh(c.buyer_price_sen_per_kwh)),
        );
      }),
    );
    fill(
      "account-settlements",
      6,
      "no settlements",
      (a.settlements || []).map((s) =>
        el(
          "tr",
          { class: "settlement" + (s.defaulted ? " defaulted" : ""), "data-slot": s.slot },
          el("td", { title: slotTitle(s.slot) }, s.slot),
          el("td", { class: "num" }, kwh(s.sold_wh)),
          el("td", { class: "num" }, kwh(s.bought_wh)),
          el("td", { class: "num" }, money(s.received_microyen)),
          el("td", { class: "num" }, money(s.paid_microyen)),
          el("td", null, s.defaulted ? "yes" : "no"),
        ),
      ),
    );
    const d = $("account-defaulted");
    const defaulted = a.defaulted_in || [];
    d.hidden = !defaulted.length;
    d.textContent = defaulted.length
      ? `Defaulted in ${defaulted.length} slot${defaulted.length === 1 ? "" : "s"}: ` +
        defaulted.map((x) => x.slot).join(", ")
      : "";
  }

  function fill(tableId, cols, emptyText, rows) {
    const body = el("tbody");
    if (rows.length) body.append(...rows);
    else body.append(el("tr", { class: "none" }, el("td", { colspan: cols }, emptyText)));
    $(tableId).tBodies[0].replaceWith(body);
  }

  // ---- refreshing everything (on start, on reconnect and every POLL_MS) --------------------
  async function refreshAll() {
    if (S.refreshing) return;
    S.refreshing = true;
    const gen = S.bookGen;
    try {
      applyStatus(await api("/status"));
      const [slots, blocks] = await Promise.all([api("/slots"), api(`/blocks?limit=${MAX_BLOCKS}`)]);
      addBlocks(blocks);
      const open = slots.filter(showable).map((s) => s.slot);
      const near = open.slice().sort().slice(0, MAX_LADDERS);
      const books = await Promise.all(near.map((slot) => api(`/slots/${enc(slot)}/ladder`)));
      const wanted = new Set(open);
      for (const slot of [...S.books.keys()]) {
        if (!wanted.has(slot) && (S.bookSeen.get(slot) || 0) <= gen) S.books.delete(slot);
      }
      for (const book of books) {
        if ((S.bookSeen.get(book.slot) || 0) <= gen) {
          if (showable(book)) S.books.set(book.slot, book);
          else S.books.delete(book.slot);
        }
      }
      renderLadders();
      await Promise.all([loadLastClearing(slots), loadPrices(), loadAccount(true)]);
      notice("");
      touched();
    } catch (e) {
      notice(`The API did not answer (${e.message}); retrying.`);
    } finally {
      S.refreshing = false;
    }
  }

  // ---- the live stream --------------------------------------------------------------------
  function connect() {
    clearTimeout(S.wsTimer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/stream`);
    } catch (_) {
      reconnect();
      return;
    }
    S.ws = ws;
    setConn("connecting");
    ws.onopen = () => {
      S.backoff = BACKOFF_MIN_MS;
      setConn("open", "live");
    };
    ws.onmessage = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      onEvent(ev);
    };
    ws.onclose = () => {
      if (S.ws !== ws) return;
      S.ws = null;
      reconnect();
    };
  }

  function reconnect() {
    const delay = S.backoff;
    S.backoff = Math.min(S.backoff * 2, BACKOFF_MAX_MS);
    setConn("closed", `reconnecting in ${Math.round(delay / 1000)} s`);
    S.wsTimer = setTimeout(connect, delay * (0.8 + 0.4 * Math.random()));
  }

  function onEvent(ev) {
    switch (ev.type) {
      case "hello":
        applyStatus(ev);
        refreshAll(); // whatever happened while the stream was away
        break;
      case "gap": // events the server no longer keeps: read everything again
        refreshAll();
        break;
      case "block":
        setHeight(ev.height, ev.time_ms);
        addBlocks([ev]);
        later("status", () => api("/status").then(applyStatus, () => {}), 500);
        later("account", () => loadAccount(true), 700);
        break;
      case "trade":
        noteAccounts((ev.balanced_units || []).flatMap((u) => [u.seller, u.buyer]));
        if (!S.clearing || ev.slot >= S.clearing.slot) renderClearing(ev);
        later("prices", () => loadPrices().catch(() => {}), 300);
        break;
      case "book":
        setBook(ev);
        later("ladders", renderLadders, 50);
        break;
      default:
        return;
    }
    touched();
  }

  // ---- start ------------------------------------------------------------------------------
  function start() {
    $("account-form").addEventListener("submit", (e) => {
      e.preventDefault();
      chooseAccount($("account-id").value);
    });
    $("price-day").addEventListener("change", (e) => {
      S.pricesDay = e.target.value || "";
      loadPrices().catch((err) => notice(`prices: ${err.message}`));
    });
    $("price-today").addEventListener("click", () => {
      S.pricesDay = "";
      loadPrices().catch((err) => notice(`prices: ${err.message}`));
    });
    document.addEventListener("click", (e) => {
      const link = e.target instanceof Element ? e.target.closest("a.acct") : null;
      if (!link) return;
      e.preventDefault();
      chooseAccount(link.textContent);
      $("account-h").scrollIntoView({ behavior: "smooth", block: "start" });
    });
    window.addEventListener("hashchange", () => {
      const id = accountFromHash();
      if (id !== null && id !== S.account) chooseAccount(id);
    });

    let id = accountFromHash();
    if (id === null) {
      try {
        id = localStorage.getItem(STORE_KEY);
      } catch (_) {
        id = null;
      }
    }
    if (id) chooseAccount(id);
    renderBlocks();
    refreshAll();
    connect();
    setInterval(refreshAll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// mosaicist live: what the three pages (guest, display, admin) share.
//
// `api` talks to the live server (one-sentence errors), `Wall` draws the grid of tiles on a
// canvas over nothing (the faint target is an <img> behind it), so that clearing a cell shows
// the target again. Loaded before each page's own script; everything is on window.mosaicistLive.
"use strict";

(() => {
  const meta = (name) => {
    const element = document.querySelector(`meta[name="${name}"]`);
    const value = element ? element.content : "";
    // An unreplaced placeholder means the server did not fill it in.
    return value && !value.startsWith("{{") ? value : "";
  };
  const TOKEN = meta("mosaicist-token");

  class ApiError extends Error {
    constructor(message, status, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  /** A sentence as the pages show it: capital first letter, full stop at the end. */
  function sentence(text) {
    let message = String(text || "").trim().replace(/\s+/g, " ");
    if (!message) return "Something went wrong.";
    if (/^[a-z]+(\s|$)/.test(message)) message = message[0].toUpperCase() + message.slice(1);
    return /[.!?]$/.test(message) ? message : message + ".";
  }

  /** The error sentence of a failed answer (its JSON `error`, else its status line). */
  async function failure(response) {
    let message = `The wall answered ${response.status} ${response.statusText || ""}`.trim();
    try {
      const data = await response.json();
      if (data && typeof data.error === "string") message = data.error;
    } catch (_) { /* not JSON: keep the status line */ }
    const retry = Number(response.headers.get("Retry-After"));
    return new ApiError(sentence(message), response.status, Number.isFinite(retry) ? retry : 0);
  }

  /**
   * Call the server: JSON in and out. `bearer` adds the admin's token; state-changing
   * methods carry the page's token, as the web foundation asks of every page.
   */
  async function api(method, url, body, {bearer = "", signal, raw = false} = {}) {
    const headers = {Accept: "application/json"};
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    if (method !== "GET" && method !== "HEAD") headers["X-Mosaicist-Token"] = TOKEN;
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    let response;
    try {
      response = await fetch(url, {method, headers, body: payload, signal,
                                   credentials: "same-origin", cache: "no-store"});
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError("The wall is not answering: check the connection to the event's Wi-Fi.", 0, 0);
    }
    if (!response.ok) throw await failure(response);
    if (raw) return response;
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  const tileUrl = (tile) => `/api/tiles/${encodeURIComponent(tile.id)}.jpg`
    // A photo that moves is tinted toward its new cell: its picture there is another one.
    + `?at=${tile.row}-${tile.col}`;
  const cellKey = (row, col) => `${row},${col}`;
  const numberFormat = new Intl.NumberFormat();

  /**
   * Tiles drawn on a canvas, one per cell of a cols x rows grid. The canvas is sized by the
   * page (`resize`); pictures load through a bounded queue, the newest first, so that a live
   * tile is not stuck behind thousands of old ones.
   */
  class Wall {
    constructor(canvas, {concurrency = 8, onDrawn = null} = {}) {
      this.canvas = canvas;
      this.context = canvas.getContext("2d");
      this.cols = 0;
      this.rows = 0;
      this.cells = new Map();   // "row,col" -> {id, row, col, image (when loaded)}
      this.where = new Map();   // photo id -> "row,col"
      this.queue = [];
      this.loading = 0;
      this.concurrency = concurrency;
      this.onDrawn = onDrawn;
      this.view = null;         // the part of the grid shown: {col, row, cols, rows}
      this.base = null;         // a picture of the whole wall, shown until the tiles load
    }

    /**
     * Show a picture of the whole wall under the tiles still loading (one request instead
     * of thousands before the wall looks whole); cells without a photo stay clear.
     */
    setBase(image) {
      this.base = image;
      this.redraw();
    }

    /** Tiles asked for and not drawn yet. */
    get waiting() { return this.loading + this.queue.length; }

    setGrid(cols, rows) {
      if (cols === this.cols && rows === this.rows) return false;
      this.cols = cols;
      this.rows = rows;
      this.cells.clear();
      this.where.clear();
      this.queue = [];
      this.base = null;
      this.clear();
      return true;
    }

    /** Show only a window of the grid (the guest page's zoom); null: all of it. */
    setView(view) {
      this.view = view;
      this.redraw();
    }

    resize(width, height) {
      const w = Math.max(1, Math.round(width));
      const h = Math.max(1, Math.round(height));
      if (this.canvas.width !== w || this.canvas.height !== h) {
        this.canvas.width = w;
        this.canvas.height = h;
      }
      this.redraw();
    }

    /** The cell's rectangle in canvas pixels (edges rounded so cells tile with no seams). */
    rect(row, col) {
      const view = this.view || {col: 0, row: 0, cols: this.cols, rows: this.rows};
      const {width, height} = this.canvas;
      const x0 = Math.round((col - view.col) * width / view.cols);
      const x1 = Math.round((col - view.col + 1) * width / view.cols);
      const y0 = Math.round((row - view.row) * height / view.rows);
      const y1 = Math.round((row - view.row + 1) * height / view.rows);
      return {x: x0, y: y0, width: x1 - x0, height: y1 - y0};
    }

    visible(row, col) {
      const view = this.view;
      return !view || (row >= view.row && row < view.row + view.rows
                       && col >= view.col && col < view.col + view.cols);
    }

    clear() {
      this.context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    }

    redraw() {
      this.clear();
      if (this.base && !this.view) {
        this.context.drawImage(this.base, 0, 0, this.canvas.width, this.canvas.height);
        for (let row = 0; row < this.rows; row += 1) {
          for (let col = 0; col < this.cols; col += 1) {
            if (!this.cells.has(cellKey(row, col))) {
              const box = this.rect(row, col);
              this.context.clearRect(box.x, box.y, box.width, box.height);
            }
          }
        }
      }
      for (const tile of this.cells.values()) this.draw(tile);
    }

    draw(tile) {
      if (!tile.image || !this.visible(tile.row, tile.col)) return;
      const box = this.rect(tile.row, tile.col);
      this.context.drawImage(tile.image, box.x, box.y, box.width, box.height);
    }

    tileAt(row, col) { return this.cells.get(cellKey(row, col)) || null; }

    /**
     * Put photo `id` in a cell (replacing what was there); resolves once it is drawn (false:
     * its picture failed to load, and placing it again asks for it again).
     */
    place(id, row, col, {urgent = false} = {}) {
      if (row < 0 || col < 0 || row >= this.rows || col >= this.cols) return Promise.resolve(false);
      const key = cellKey(row, col);
      const shown = this.cells.get(key);
      // A tile whose picture failed to load (the server away for a moment) is asked for
      // again: else the cell stayed blank for good, taken for one already shown.
      if (shown && shown.id === id && !shown.failed) return shown.ready;
      this.removePhoto(id);
      this.clearCell(row, col);
      const tile = {id, row, col, image: null};
      tile.ready = new Promise((resolve) => { tile.resolve = resolve; });
      this.cells.set(key, tile);
      this.where.set(id, key);
      if (urgent) this.queue.unshift(tile); else this.queue.push(tile);
      this.pump();
      return tile.ready;
    }

    /** Take photo `id` off the wall; returns the cell it was in, or null. */
    removePhoto(id) {
      const key = this.where.get(id);
      if (key === undefined) return null;
      const tile = this.cells.get(key);
      if (tile) this.clearCell(tile.row, tile.col);
      return tile || null;
    }

    clearCell(row, col) {
      const key = cellKey(row, col);
      const tile = this.cells.get(key);
      if (!tile) return;
      this.cells.delete(key);
      if (this.where.get(tile.id) === key) this.where.delete(tile.id);
      tile.gone = true;
      if (tile.resolve) tile.resolve(false);
      if (this.visible(row, col)) {
        const box = this.rect(row, col);
        this.context.clearRect(box.x, box.y, box.width, box.height);
      }
    }

    pump() {
      while (this.loading < this.concurrency && this.queue.length) {
        const tile = this.queue.shift();
        if (tile.gone) continue;
        this.loading += 1;
        const image = new Image();
        image.decoding = "async";
        const done = (ok) => {
          this.loading -= 1;
          if (!ok) tile.failed = true;
          if (ok && !tile.gone) {
            tile.image = image;
            this.draw(tile);
            if (this.onDrawn) this.onDrawn(tile);
          }
          if (tile.resolve) tile.resolve(ok && !tile.gone);
          if (!this.waiting) this.base = null;  // every tile is drawn: the picture is spent
          this.pump();
        };
        image.onload = () => done(true);
        image.onerror = () => done(false);
        image.src = tileUrl(tile);
      }
    }

    get filled() { return this.cells.size; }
  }

  /** The guest link: the one the server gave the page, else this server's root. */
  function guestLink(fromWall) {
    return (fromWall && String(fromWall)) || meta("mosaicist-guest-url") || `${location.origin}/`;
  }

  /** A link as people type it: no scheme, no trailing slash. */
  function shortLink(url) {
    return String(url).replace(/^https?:\/\//, "").replace(/\/$/, "");
  }

  window.mosaicistLive = {ApiError, Wall, api, cellKey, failure, guestLink, meta, numberFormat,
                          sentence, shortLink, tileUrl, TOKEN};
})();

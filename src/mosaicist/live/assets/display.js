// mosaicist live: the display page, full screen on a TV or a projector.
//
// The target is shown faintly (an <img> behind a transparent canvas); each placed photo is
// drawn in its cell as the server announces it on /api/events, with a short highlight. The
// page never trusts that it saw every event: on every (re)connection, when it notices a gap
// in the versions, when it becomes visible again and once a minute, it fetches /api/wall and
// reconciles what it shows with it, so a dropped connection or a restarted server heals itself.
"use strict";

(() => {
  const {Wall, api, cellKey, guestLink, numberFormat, shortLink, tileUrl} = window.mosaicistLive;
  const $ = (id) => document.getElementById(id);

  const RESYNC_MS = 60_000;        // safety net: reconcile with /api/wall this often
  const STATUS_DELAY_MS = 2_000;   // a connection down this long is shown as such
  const BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 15_000];
  const MAX_FLASHES = 24;          // highlights at once; more arrivals just appear
  const CONTROLS_MS = 3_000;       // the buttons hide again after this long without a move
  const BASE_FROM_TILES = 64;       // more tiles than this to load: show the wall's picture first
  const JOIN_RESERVE = 0.85;       // keep the QR code beside the wall if the wall keeps this share

  const canvas = $("tiles");
  const board = $("board");
  const wall = new Wall(canvas, {concurrency: 8});
  const state = {
    version: -1,        // the version of the wall shown; -1: not loaded yet
    loaded: false,
    syncing: null,      // the running reconciliation (a promise)
    again: false,       // reconcile once more when the running one ends
    buffered: [],       // events received while reconciling
    source: null,
    attempt: 0,
    retryTimer: 0,
    statusTimer: 0,
    targetAspect: 0,    // the target's width / height once loaded
    guestUrl: "",
  };

  // --- layout --------------------------------------------------------------------------------

  function boardAspect() {
    if (state.targetAspect) return state.targetAspect;
    return wall.cols && wall.rows ? wall.cols / wall.rows : 16 / 9;
  }

  /** Fit the wall in the window, beside the QR code when that costs little, else under it. */
  function layout() {
    const stageWidth = window.innerWidth;
    const stageHeight = window.innerHeight;
    const aspect = boardAspect();
    const join = $("join");
    const reserve = join.hidden ? 0 : join.offsetWidth + 24;
    const fit = (width) => Math.min(width, stageHeight * aspect);
    const full = fit(stageWidth);
    const beside = reserve ? fit(stageWidth - reserve) : full;
    const width = beside >= JOIN_RESERVE * full ? beside : full;
    const height = width / aspect;
    const besideJoin = reserve > 0 && beside >= JOIN_RESERVE * full;
    // Beside the QR code, the wall is centred in the room left of it.
    $("stage").style.paddingRight = besideJoin ? `${reserve}px` : "0px";
    board.style.width = `${width}px`;
    board.style.height = `${height}px`;
    const ratio = Math.min(window.devicePixelRatio || 1, 3);
    wall.resize(width * ratio, height * ratio);
  }

  // --- the wall ------------------------------------------------------------------------------

  let describeQueued = false;
  /** Update the count and the wall's description, at most once a frame. */
  function describe() {
    if (describeQueued) return;
    describeQueued = true;
    requestAnimationFrame(() => {
      describeQueued = false;
      describeNow();
    });
  }

  function describeNow() {
    const total = wall.cols * wall.rows;
    const filled = wall.filled;
    $("count").textContent = total
      ? `${numberFormat.format(filled)} of ${numberFormat.format(total)} photos`
      : "";
    board.setAttribute("aria-label", total
      ? `The photo wall: ${numberFormat.format(filled)} of ${numberFormat.format(total)} cells filled`
      : "The photo wall");
    board.dataset.filled = String(filled);
    board.dataset.version = String(state.version);
  }

  /** A short highlight over a tile that just arrived: it lands from larger, glowing. */
  function flash(tile) {
    const layer = $("flashes");
    if (layer.childElementCount >= MAX_FLASHES || document.hidden) return;
    const scale = board.clientWidth / canvas.width;
    const box = wall.rect(tile.row, tile.col);
    const image = new Image();
    image.className = "flash";
    image.alt = "";
    image.src = tileUrl(tile);
    image.style.left = `${box.x * scale}px`;
    image.style.top = `${box.y * scale}px`;
    image.style.width = `${box.width * scale}px`;
    image.style.height = `${box.height * scale}px`;
    // Land from about a tenth of the wall's height, whatever the cell's size.
    const from = Math.max(2, Math.min(12, (board.clientHeight / 10) / Math.max(1, box.height * scale)));
    image.style.setProperty("--from", String(from));
    image.addEventListener("animationend", () => image.remove());
    // If animations never run (a hidden tab), the highlight still goes.
    setTimeout(() => image.remove(), 4_000);
    layer.append(image);
  }

  function place(tile, highlight) {
    wall.place(tile.id, tile.row, tile.col, {urgent: highlight}).then((drawn) => {
      describe();
      if (drawn && highlight) flash(tile);
    });
  }

  /** Make the wall what the server says it is. */
  function reconcile(snapshot, highlight) {
    const {cols, rows} = snapshot.grid;
    if (wall.setGrid(cols, rows)) layout();
    const wanted = new Map();
    for (const tile of snapshot.tiles) wanted.set(cellKey(tile.row, tile.col), tile);
    for (const [key, shown] of [...wall.cells]) {
      const tile = wanted.get(key);
      if (!tile || tile.id !== shown.id) wall.clearCell(shown.row, shown.col);
    }
    for (const tile of snapshot.tiles) {
      const shown = wall.tileAt(tile.row, tile.col);
      // A tile that failed to load is not shown: its picture is asked for again.
      if (!shown || shown.id !== tile.id || shown.failed) place(tile, highlight);
    }
    state.version = Number(snapshot.version) || 0;
    if (wall.waiting > BASE_FROM_TILES) showBase(state.version);
    describe();
  }

  /** Many tiles to load (a first load, a reload): show a picture of the wall meanwhile. */
  function showBase(version) {
    const image = new Image();
    const width = Math.max(16, Math.min(4096, canvas.width));
    image.onload = () => {
      if (wall.waiting) wall.setBase(image);
    };
    image.src = `/api/wall.jpg?width=${width}&v=${version}`;
  }

  /** Fetch /api/wall and reconcile; events that came meanwhile are applied after it. */
  function sync() {
    if (state.syncing) {
      state.again = true;
      return state.syncing;
    }
    state.syncing = (async () => {
      try {
        do {
          state.again = false;
          const snapshot = await api("GET", "/api/wall");
          // Tiles missed while away are highlighted too, but not the whole wall on first load.
          reconcile(snapshot, state.loaded);
          state.loaded = true;
        } while (state.again);
        const waiting = state.buffered;
        state.buffered = [];
        for (const [kind, data] of waiting) handle(kind, data);
      } catch (_) {
        // The server is away: the event stream's reconnection will bring us back here.
      } finally {
        state.syncing = null;
      }
    })();
    return state.syncing;
  }

  /** One event from the stream: applied in order, a gap in versions means a resync. */
  function handle(kind, data) {
    if (state.syncing || !state.loaded) {
      state.buffered.push([kind, data]);
      return;
    }
    const version = Number(data.version);
    if (kind === "reset") {
      // Sent first on every connection (the reconciliation on opening covers that) and to a
      // reader that fell behind: only a newer version than the one shown needs a fetch.
      if (!(version <= state.version)) sync();
      return;
    }
    if (Number.isFinite(version)) {
      if (version <= state.version) return;  // already in the snapshot
      if (version > state.version + 1) {
        sync();
        return;
      }
      state.version = version;
    }
    if (kind === "tile") {
      place(data, true);
    } else if (kind === "removed") {
      if (data.id !== undefined && wall.where.has(data.id)) wall.removePhoto(data.id);
      else if (Number.isInteger(data.row) && Number.isInteger(data.col)) wall.clearCell(data.row, data.col);
      describe();
    } else if (kind === "moved") {
      const moves = Array.isArray(data.moves) ? data.moves : [data];
      // Take them all off first: photos may swap cells.
      for (const move of moves) wall.removePhoto(move.id);
      for (const move of moves) place(move, false);
    }
    describe();
  }

  // --- the event stream ----------------------------------------------------------------------

  /** Say the connection is down once it has been for a moment ("" : it is up again). */
  function showConnection(text) {
    if (!text) {
      clearTimeout(state.statusTimer);
      state.statusTimer = 0;
      $("connection").hidden = true;
      document.body.classList.remove("offline");
      return;
    }
    if (state.statusTimer) return;  // counting from the first failure, not the latest retry
    state.statusTimer = setTimeout(() => {
      $("connection").textContent = text;
      $("connection").hidden = false;
      document.body.classList.add("offline");
    }, STATUS_DELAY_MS);
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (state.source) state.source.close();
    const source = new EventSource("/api/events");
    state.source = source;
    source.addEventListener("open", () => {
      state.attempt = 0;
      showConnection("");
      sync();
    });
    for (const kind of ["tile", "removed", "moved", "reset"]) {
      source.addEventListener(kind, (message) => {
        let data;
        try { data = JSON.parse(message.data); } catch (_) { return; }
        if (data && typeof data === "object") handle(kind, data);
      });
    }
    source.addEventListener("error", () => {
      if (state.source !== source) return;
      showConnection("Reconnecting to the wall\u2026");
      // The browser retries by itself while CONNECTING; once CLOSED (the server refused or
      // is gone), it is up to us, with a growing pause.
      if (source.readyState === EventSource.CLOSED) {
        const delay = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
        state.attempt += 1;
        state.retryTimer = setTimeout(connect, delay);
      }
    });
  }

  // --- the corner: QR code and link, controls ------------------------------------------------

  function showGuestLink(url) {
    state.guestUrl = url;
    $("guest-link").textContent = shortLink(url);
  }

  function toggleJoin() {
    const join = $("join");
    join.hidden = !join.hidden;
    $("toggle-join").setAttribute("aria-pressed", String(!join.hidden));
    layout();
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
  }

  let controlsTimer = 0;
  function showControls() {
    $("controls").hidden = false;
    document.body.classList.remove("idle");
    clearTimeout(controlsTimer);
    controlsTimer = setTimeout(() => {
      if ($("controls").contains(document.activeElement)) return;
      $("controls").hidden = true;
      document.body.classList.add("idle");  // hides the pointer too
    }, CONTROLS_MS);
  }

  /** The guests' link as the QR code has it (the server knows the address phones use). */
  async function loadGuestLink() {
    try {
      const info = await api("GET", "/api/info");
      if (info && info.guest_url) showGuestLink(info.guest_url);
    } catch (_) { /* keep this page's own address */ }
  }

  function start() {
    showGuestLink(guestLink(""));
    loadGuestLink();
    const target = $("target");
    const aspectKnown = () => {
      if (target.naturalWidth && target.naturalHeight) {
        state.targetAspect = target.naturalWidth / target.naturalHeight;
        layout();
      }
    };
    if (target.complete) aspectKnown();
    target.addEventListener("load", aspectKnown);
    target.addEventListener("error", () => target.classList.add("missing"));
    $("qr").addEventListener("error", () => $("qr").classList.add("missing"));
    $("qr").addEventListener("load", layout);
    window.addEventListener("resize", layout);
    $("fullscreen").addEventListener("click", toggleFullscreen);
    $("toggle-join").addEventListener("click", toggleJoin);
    document.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      if (event.key === "f" || event.key === "F") toggleFullscreen();
      else if (event.key === "q" || event.key === "Q") toggleJoin();
      else showControls();
    });
    document.addEventListener("pointermove", showControls);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) sync(); });
    setInterval(() => { if (!document.hidden) sync(); }, RESYNC_MS);
    layout();
    connect();
    sync();
    showControls();
  }

  // For people and tests looking at the page: what it shows.
  window.mosaicistDisplay = {
    wall,
    get version() { return state.version; },
    get connected() { return state.source !== null && state.source.readyState === EventSource.OPEN; },
    sync,
  };

  start();
})();

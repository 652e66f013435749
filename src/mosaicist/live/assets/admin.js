// mosaicist live: the host's page.
//
// The admin token comes in the URL fragment (/admin#token=...), which browsers never send to
// a server; it is kept in this tab's sessionStorage and the fragment is taken out of the
// address bar, so that it does not show on a projected screen. Every call carries it as a
// bearer header; state-changing calls also carry the page's token, as every page's do.
// The page asks for /api/admin/state every few seconds while it is visible.
"use strict";

(() => {
  const {ApiError, Wall, api, failure, guestLink, numberFormat, sentence, shortLink, tileUrl} =
    window.mosaicistLive;
  const $ = (id) => document.getElementById(id);

  const TOKEN_KEY = "mosaicist-live-admin";
  const REFRESH_MS = 3_000;
  const CONFIRM_MS = 5_000;
  const COUNT_LABELS = {
    received: "Photos received",
    placed: "On the wall",
    shown: "On the wall",
    pending: "Waiting for approval",
    overflow: "Waiting for a free cell",
    rejected: "Rejected",
    removed: "Taken off",
    cells: "Cells",
    empty: "Empty cells",
    free: "Empty cells",
    fills: "Filled at the end",
    guests: "Guests",
  };

  const state = {
    token: "",
    server: null,       // the last /api/admin/state
    wallVersion: null,
    selected: null,     // {row, col}
    images: new Map(),  // photo id -> blob URL of its picture (fetched with the token)
    timer: 0,
    busy: false,
    removeArmed: 0,
  };
  const wall = new Wall($("wall-tiles"), {concurrency: 6, onDrawn: (tile) => {
    if (state.selected && tile.row === state.selected.row && tile.col === state.selected.col) {
      showCell();
    }
  }});

  // --- errors and messages -------------------------------------------------------------------

  function showError(error) {
    if (error && error.name === "AbortError") return;
    if (!(error instanceof ApiError)) console.error(error);
    $("error-text").textContent = sentence(error instanceof Error ? error.message : error);
    $("error").hidden = false;
  }

  function tell(text) { $("message").textContent = text; }

  /** Run an action from a control: errors become the one sentence on the page. */
  function guarded(action) {
    return async (...args) => {
      $("error").hidden = true;
      try {
        await action(...args);
      } catch (error) {
        // 401: the admin token is wrong (a 403 is the page's own token or origin: reload).
        if (error instanceof ApiError && error.status === 401) {
          signOut(error.message);
          return;
        }
        showError(error);
      }
    };
  }

  const admin = (method, url, body) => api(method, url, body, {bearer: state.token});

  // --- the token -----------------------------------------------------------------------------

  function tokenFrom(text) {
    const value = String(text || "").trim();
    const hash = value.includes("#") ? value.slice(value.indexOf("#") + 1) : "";
    if (hash) return new URLSearchParams(hash).get("token") || "";
    return /^[\w-]{8,}$/.test(value) ? value : "";
  }

  function signIn(token) {
    state.token = token;
    try { sessionStorage.setItem(TOKEN_KEY, token); } catch (_) { /* kept in memory only */ }
    $("signin").hidden = true;
    $("console").hidden = false;
    refresh();
  }

  function signOut(reason) {
    state.token = "";
    clearTimeout(state.timer);
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing kept */ }
    $("console").hidden = true;
    $("signin").hidden = false;
    if (reason) showError(reason);
    $("signin-token").focus();
  }

  // --- the state -----------------------------------------------------------------------------

  async function refresh() {
    clearTimeout(state.timer);
    if (!state.token) return;
    try {
      if (!document.hidden) {
        const server = await admin("GET", "/api/admin/state");
        state.server = server;
        render(server);
        await refreshWall(server);
        $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
      }
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        signOut(error.message);
        return;
      }
      $("updated").textContent = error instanceof Error ? error.message : String(error);
    }
    state.timer = setTimeout(refresh, REFRESH_MS);
  }

  function label(name) {
    return COUNT_LABELS[name] || sentence(name.replace(/_/g, " ")).replace(/\.$/, "");
  }

  function render(server) {
    const counts = server.counts && typeof server.counts === "object" ? server.counts : {};
    const list = $("counts");
    list.replaceChildren();
    for (const [name, value] of Object.entries(counts)) {
      if (typeof value !== "number") continue;
      const term = document.createElement("dt");
      term.textContent = label(name);
      const detail = document.createElement("dd");
      detail.textContent = numberFormat.format(value);
      detail.dataset.count = name;
      const pair = document.createElement("div");
      pair.append(term, detail);
      list.append(pair);
    }
    // Completing from a library needs one given at start (--fallback).
    const library = $("complete-library");
    library.disabled = server.fallback === false;
    if (library.disabled && library.checked) $("complete-received").checked = true;
    $("complete-library-hint").hidden = !library.disabled;
    // A switch being sent keeps the host's choice until the server has it.
    if (!$("accepting").disabled) $("accepting").checked = !server.paused;
    if (!$("moderation").disabled) $("moderation").checked = Boolean(server.moderation);
    document.body.classList.toggle("paused", Boolean(server.paused));
    const link = guestLink(server.guest_url);
    $("guest-link").href = link;
    $("guest-link").textContent = shortLink(link);
    $("guest-page").href = link;

    const pending = Array.isArray(server.pending) ? server.pending : [];
    const overflow = Array.isArray(server.overflow) ? server.overflow : [];
    $("pending-count").textContent = numberFormat.format(pending.length);
    $("overflow-count").textContent = numberFormat.format(overflow.length);
    $("pending-empty").hidden = pending.length > 0;
    $("overflow-empty").hidden = overflow.length > 0;
    renderPhotos($("pending"), pending, [
      ["Approve", "primary small", (entry) => decide(entry, "approve")],
      ["Reject", "danger small", (entry) => decide(entry, "reject")],
    ]);
    renderPhotos($("overflow"), overflow, [
      ["Remove", "danger small", (entry) => removePhoto(entry.id)],
    ]);
    const keep = new Set([...pending, ...overflow].map((entry) => String(entry.id)));
    for (const [id, url] of state.images) {
      if (!keep.has(id)) {
        URL.revokeObjectURL(url);
        state.images.delete(id);
      }
    }
  }

  function entryId(entry) { return String(typeof entry === "object" ? entry.id : entry); }

  function when(entry) {
    const value = entry.received ?? entry.received_at ?? entry.time ?? entry.created;
    if (value === undefined || value === null) return "";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return Number.isNaN(date.getTime()) ? "" : `received ${date.toLocaleTimeString()}`;
  }

  /** Keep one list item per photo (no flicker on refresh), in the server's order. */
  function renderPhotos(list, entries, actions) {
    const existing = new Map([...list.children].map((element) => [element.dataset.id, element]));
    const wanted = [];
    for (const raw of entries) {
      const entry = typeof raw === "object" && raw !== null ? raw : {id: raw};
      const id = entryId(entry);
      let element = existing.get(id);
      if (!element) {
        element = $("photo-template").content.firstElementChild.cloneNode(true);
        element.dataset.id = id;
        const image = element.querySelector("img");
        image.alt = `Photo ${id.slice(0, 8)}`;
        loadPicture(entry, image);
        const row = element.querySelector(".photo-actions");
        for (const [text, style, act] of actions) {
          const button = document.createElement("button");
          button.type = "button";
          button.className = style;
          button.textContent = text;
          button.setAttribute("aria-label", `${text} photo ${id.slice(0, 8)}`);
          button.addEventListener("click", guarded(async () => {
            // One decision per photo: its buttons wait until the answer, then it leaves the list.
            const buttons = [...row.querySelectorAll("button")];
            for (const each of buttons) each.disabled = true;
            try {
              await act(entry);
              element.remove();
            } finally {
              for (const each of buttons) each.disabled = false;
            }
          }));
          row.append(button);
        }
      }
      element.querySelector(".photo-meta").textContent = [entry.name, when(entry)]
        .filter(Boolean).join(", ");
      wanted.push(element);
    }
    list.replaceChildren(...wanted);
  }

  /** A waiting photo's picture: fetched with the token (an <img> cannot send it). */
  async function loadPicture(entry, image) {
    const id = entryId(entry);
    const known = state.images.get(id);
    if (known) {
      image.src = known;
      return;
    }
    const url = entry.url || entry.thumbnail_url || entry.thumbnail
      || `/api/admin/photos/${encodeURIComponent(id)}.jpg`;
    try {
      const response = await api("GET", url, undefined, {bearer: state.token, raw: true});
      const blobUrl = URL.createObjectURL(await response.blob());
      state.images.set(id, blobUrl);
      image.src = blobUrl;
    } catch (_) {
      image.classList.add("missing");
    }
  }

  // --- actions -------------------------------------------------------------------------------

  async function decide(entry, verdict) {
    const answer = await admin("POST", `/api/admin/photos/${encodeURIComponent(entryId(entry))}/${verdict}`);
    if (verdict === "approve" && answer && Number.isInteger(answer.row)) {
      tell(`Approved: the photo is at row ${answer.row + 1}, column ${answer.col + 1}.`);
    } else {
      tell(verdict === "approve" ? "Approved." : "Rejected: the photo will not be shown.");
    }
    await refresh();
  }

  async function removePhoto(id) {
    await admin("DELETE", `/api/admin/photos/${encodeURIComponent(id)}`);
    tell("The photo is off the wall; its cell is free again.");
    await refresh();
  }

  async function setSwitch(url, body, control) {
    control.disabled = true;
    try {
      await admin("POST", url, body);
      await refresh();
    } finally {
      control.disabled = false;
    }
  }

  async function complete(event) {
    event.preventDefault();
    const source = document.querySelector('input[name="complete-source"]:checked').value;
    const uses = Number($("complete-uses").value);
    if (!Number.isInteger(uses) || uses < 1) throw new ApiError("Most uses of one photo must be a whole number from 1.", 400, 0);
    $("complete").disabled = true;
    tell("Filling the empty cells\u2026");
    try {
      const answer = await admin("POST", "/api/admin/complete", {source, max_uses: uses});
      const filled = answer && typeof answer === "object"
        ? answer.filled ?? answer.completed ?? answer.count : undefined;
      tell(typeof filled === "number"
        ? `${numberFormat.format(filled)} empty ${filled === 1 ? "cell" : "cells"} filled.`
        : "The empty cells are filled.");
      await refresh();
    } catch (error) {
      tell("");
      throw error;
    } finally {
      $("complete").disabled = false;
    }
  }

  /** Download through fetch (the token goes in a header), then hand the file to the browser. */
  async function download(button) {
    const text = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = `${text}: preparing\u2026`;
    try {
      const response = await fetch(button.dataset.url, {
        headers: {Authorization: `Bearer ${state.token}`}, cache: "no-store",
      });
      if (!response.ok) throw await failure(response);
      const blob = await response.blob();
      const disposition = response.headers.get("Content-Disposition") || "";
      const utf8 = /filename\*=UTF-8''([^;]+)/i.exec(disposition);
      const plain = /filename="?([^";]+)"?/i.exec(disposition);
      const name = utf8 ? decodeURIComponent(utf8[1]) : plain ? plain[1] : button.dataset.name;
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = name;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
      tell(`${name} downloaded (${numberFormat.format(Math.ceil(blob.size / 1024))} KB).`);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = text;
    }
  }

  // --- the wall ------------------------------------------------------------------------------

  async function refreshWall(server) {
    if (server.version !== undefined && server.version === state.wallVersion) return;
    const snapshot = await admin("GET", "/api/wall");
    if (snapshot.version === state.wallVersion) return;
    const {cols, rows} = snapshot.grid;
    if (wall.setGrid(cols, rows)) layoutWall();
    const wanted = new Map(snapshot.tiles.map((tile) => [`${tile.row},${tile.col}`, tile]));
    for (const [key, shown] of [...wall.cells]) {
      const tile = wanted.get(key);
      if (!tile || tile.id !== shown.id) wall.clearCell(shown.row, shown.col);
    }
    for (const tile of snapshot.tiles) wall.place(tile.id, tile.row, tile.col);
    state.wallVersion = snapshot.version;
    $("pick-row").max = String(rows);
    $("pick-col").max = String(cols);
    showCell();
  }

  function layoutWall() {
    const frame = $("wall-frame");
    const target = $("wall-target");
    const aspect = target.naturalWidth && target.naturalHeight
      ? target.naturalWidth / target.naturalHeight : (wall.cols / Math.max(1, wall.rows)) || 1;
    frame.style.aspectRatio = String(aspect);
    const width = frame.clientWidth * Math.min(window.devicePixelRatio || 1, 2);
    wall.resize(width, width / aspect);
    showCell();
  }

  function select(row, col) {
    if (!Number.isInteger(row) || !Number.isInteger(col) || row < 0 || col < 0) return;
    if (!wall.cols) {
      // Picked before the wall's first snapshot arrived (it follows the counts): shown
      // with it, where the grid holds it.
      state.selected = {row, col};
      return;
    }
    if (row >= wall.rows || col >= wall.cols) return;
    state.selected = {row, col};
    $("pick-row").value = String(row + 1);
    $("pick-col").value = String(col + 1);
    showCell();
  }

  function showCell() {
    const mark = $("wall-mark");
    const selected = state.selected;
    if (!selected || !wall.cols) {
      mark.hidden = true;
      return;
    }
    const {row, col} = selected;
    if (row >= wall.rows || col >= wall.cols) {
      state.selected = null;
      mark.hidden = true;
      return;
    }
    mark.hidden = false;
    mark.style.left = `${100 * col / wall.cols}%`;
    mark.style.top = `${100 * row / wall.rows}%`;
    mark.style.width = `${100 / wall.cols}%`;
    mark.style.height = `${100 / wall.rows}%`;
    const tile = wall.tileAt(row, col);
    const where = `Row ${numberFormat.format(row + 1)}, column ${numberFormat.format(col + 1)}`;
    const image = $("cell-image");
    // Called on every refresh that brings a new wall (every few seconds while guests send):
    // the first click stays armed while the cell shows the same photo, and only for it.
    if (!tile || tile.id !== $("remove").dataset.id) disarmRemove();
    if (!tile) {
      image.hidden = true;
      $("cell-text").textContent = `${where}: empty.`;
      $("remove").hidden = true;
      return;
    }
    const source = tileUrl(tile);
    if (image.getAttribute("src") !== source) image.src = source;
    image.alt = `The photo at ${where.toLowerCase()}`;
    image.hidden = false;
    $("cell-text").textContent = `${where}: photo ${tile.id.slice(0, 8)}.`;
    $("remove").hidden = false;
    $("remove").dataset.id = tile.id;
  }

  function disarmRemove() {
    clearTimeout(state.removeArmed);
    state.removeArmed = 0;
    $("remove").textContent = "Take this photo off the wall";
    $("remove").classList.remove("armed");
  }

  /** Two clicks: a photo taken off by a slip would be hard to explain to its guest. */
  async function removeSelected() {
    const button = $("remove");
    if (!state.removeArmed) {
      button.textContent = "Click again to take it off";
      button.classList.add("armed");
      state.removeArmed = setTimeout(disarmRemove, CONFIRM_MS);
      return;
    }
    disarmRemove();
    await removePhoto(button.dataset.id);
  }

  function cellFromPointer(event) {
    const box = $("wall-tiles").getBoundingClientRect();
    const col = Math.floor((event.clientX - box.left) / box.width * wall.cols);
    const row = Math.floor((event.clientY - box.top) / box.height * wall.rows);
    select(row, col);
  }

  // --- start ---------------------------------------------------------------------------------

  function start() {
    $("error-close").addEventListener("click", () => { $("error").hidden = true; });
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = tokenFrom($("signin-token").value);
      if (!token) {
        showError("That is neither the admin link nor its token: copy the whole link that mosaicist live printed.");
        return;
      }
      $("signin-token").value = "";
      signIn(token);
    });
    $("accepting").addEventListener("change", guarded(() =>
      setSwitch("/api/admin/pause", {paused: !$("accepting").checked}, $("accepting"))));
    $("moderation").addEventListener("change", guarded(() =>
      setSwitch("/api/admin/moderation", {on: $("moderation").checked}, $("moderation"))));
    $("complete-form").addEventListener("submit", guarded(complete));
    for (const button of document.querySelectorAll("button.download")) {
      button.addEventListener("click", guarded(() => download(button)));
    }
    $("remove").addEventListener("click", guarded(removeSelected));
    $("wall-tiles").addEventListener("click", cellFromPointer);
    $("pick-cell").addEventListener("submit", (event) => {
      event.preventDefault();
      select(Number($("pick-row").value) - 1, Number($("pick-col").value) - 1);
    });
    $("wall-target").addEventListener("load", layoutWall);
    window.addEventListener("resize", layoutWall);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

    const fromFragment = tokenFrom(location.hash);
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    let token = fromFragment;
    if (!token) {
      try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { token = ""; }
    }
    if (token) signIn(token);
    else signOut("");
    layoutWall();
  }

  start();
})();

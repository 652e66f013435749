// mosaicist live: the guest page, for a phone.
//
// A guest picks or takes one or more photos; each is sent on its own (so each has its own
// progress and its own answer), one after the other. The answer says where the photo landed
// (201: row and column) or that it waits (202: moderation, or the wall is full); waiting
// photos are asked about again until they land. A photo the wall cannot take yet (429: this
// phone sends too fast; 503 without the host's pause: too many guests at once) is sent again
// by itself after the wait the wall asks for. The page remembers the guest's photo ids
// (they are the only ones the server tells this guest about), so a reloaded page shows them.
"use strict";

(() => {
  const {ApiError, Wall, api, numberFormat, sentence, TOKEN} = window.mosaicistLive;
  const $ = (id) => document.getElementById(id);

  const STORAGE_KEY = "mosaicist-live-photos";
  const REMEMBERED = 50;                 // photo ids kept across reloads
  const SHRINK_ABOVE_BYTES = 2.5 * 2 ** 20;
  const LONGEST_SIDE = 2048;             // what the wall keeps of a photo at most
  const SHRUNK_QUALITY = 0.9;
  const UPLOAD_TIMEOUT_MS = 180_000;
  const RATE_RETRIES = 3;                // automatic retries when the server asks to slow down
  const BUSY_RETRIES = 10;               // automatic retries while the wall is too busy (503)
  const BUSY_JITTER_MS = 3_000;          // spread, so that a refused crowd does not return at once
  const PENDING_POLL_MS = [3_000, 5_000, 10_000];
  const PLACED_POLL_MS = 30_000;         // photos may move while the event runs
  const WALL_FRESH_MS = 5_000;
  const SPOT_CELLS = 7;                  // cells across the zoomed view around a photo
  const FINAL = ["rejected", "removed", "deleted"];

  const items = [];
  let sending = Promise.resolve();
  let wallCache = null;  // {time, promise}

  // --- remembering the guest's photos --------------------------------------------------------

  function remembered() {
    try {
      const list = JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(list) ? list.filter((entry) => entry && typeof entry.id === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function remember() {
    const list = items.filter((item) => item.id && !item.forgotten)
      .map((item) => ({id: item.id, name: item.name}));
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(list.slice(-REMEMBERED)));
    } catch (_) { /* private mode: the page still works, it just forgets on reload */ }
  }

  // --- one photo on the page -----------------------------------------------------------------

  function addItem(name) {
    const element = $("upload-template").content.firstElementChild.cloneNode(true);
    const item = {
      id: null, name, element, status: "", row: null, col: null, timer: 0, polls: 0,
      file: null, retries: 0, busyRetries: 0, forgotten: false,
      part: (selector) => element.querySelector(selector),
    };
    item.part(".upload-name").textContent = name || "Photo";
    item.part(".upload-progress").setAttribute("aria-label", `Sending ${name || "the photo"}`);
    item.part(".retry").addEventListener("click", () => {
      item.part(".retry").hidden = true;
      queue(item);
    });
    $("uploads").prepend(element);
    $("sent").hidden = false;
    items.push(item);
    return item;
  }

  function say(item, text, kind = "") {
    const status = item.part(".upload-status");
    status.textContent = text;
    item.element.dataset.state = kind;
  }

  function setProgress(item, fraction) {
    const bar = item.part(".upload-progress");
    bar.hidden = fraction === null;
    if (fraction === undefined) bar.removeAttribute("value");  // working, amount unknown
    else if (fraction !== null) bar.value = Math.round(fraction * 100);
  }

  function showThumb(item, source) {
    const thumb = item.part(".upload-thumb");
    thumb.addEventListener("error", () => thumb.classList.add("missing"), {once: true});
    thumb.addEventListener("load", () => {
      thumb.classList.remove("missing");
      if (source.startsWith("blob:")) URL.revokeObjectURL(source);
    }, {once: true});
    thumb.src = source;
  }

  // --- sending -------------------------------------------------------------------------------

  /** A large photo the browser can decode is sent smaller: event Wi-Fi is slow and shared. */
  async function prepare(file) {
    if (file.size <= SHRINK_ABOVE_BYTES || !/^image\/(jpeg|png|webp)$/.test(file.type)
        || typeof createImageBitmap !== "function") {
      return file;
    }
    try {
      const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
      const scale = Math.min(1, LONGEST_SIDE / Math.max(bitmap.width, bitmap.height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      const context = canvas.getContext("2d");
      context.fillStyle = "#ffffff";  // a transparent PNG becomes a photo on white
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", SHRUNK_QUALITY));
      if (!blob || blob.size >= file.size) return file;
      const stem = (file.name || "photo").replace(/\.[^.]*$/, "");
      return new File([blob], `${stem}.jpg`, {type: "image/jpeg"});
    } catch (_) {
      return file;  // the server decodes what the browser cannot (HEIC, odd files)
    }
  }

  /** POST one photo with upload progress (fetch has none); resolves {status, data}. */
  function send(file, onProgress) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", "/api/photos");
      request.setRequestHeader("X-Mosaicist-Token", TOKEN);
      request.setRequestHeader("Accept", "application/json");
      request.timeout = UPLOAD_TIMEOUT_MS;
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable && event.total) onProgress(event.loaded / event.total);
      });
      request.upload.addEventListener("load", () => onProgress(undefined));
      request.addEventListener("load", () => {
        let data = null;
        try { data = JSON.parse(request.responseText); } catch (_) { /* keep null */ }
        if (request.status >= 200 && request.status < 300 && data) {
          resolve({status: request.status, data});
          return;
        }
        const message = data && typeof data.error === "string"
          ? data.error : `The wall answered ${request.status} ${request.statusText || ""}`;
        const retry = Number(request.getResponseHeader("Retry-After"));
        reject(new ApiError(sentence(message), request.status, Number.isFinite(retry) ? retry : 0));
      });
      const cut = () => reject(new ApiError(
        "The upload was cut off: check the connection to the event's Wi-Fi and try again.", 0, 0));
      request.addEventListener("error", cut);
      request.addEventListener("timeout", cut);
      const form = new FormData();
      form.append("photo", file, file.name || "photo.jpg");
      request.send(form);
    });
  }

  async function upload(item) {
    say(item, "Preparing\u2026", "sending");
    setProgress(item, 0);
    let file = item.file;
    try {
      file = await prepare(item.file);
      say(item, "Sending\u2026", "sending");
      const {status, data} = await send(file, (fraction) => {
        setProgress(item, fraction);
        if (fraction === undefined) say(item, "Finding its place on the wall\u2026", "sending");
      });
      const answer = Array.isArray(data.photos) ? data.photos[0] : data;
      item.id = String(answer.id);
      item.file = null;
      remember();
      if (!$("notice").hidden) checkPaused();
      update(item, status === 201 ? {...answer, status: "placed"} : answer);
    } catch (error) {
      setProgress(item, null);
      if (error instanceof ApiError && error.status === 429 && item.retries < RATE_RETRIES) {
        item.retries += 1;
        const seconds = Math.max(2, Math.min(60, error.retryAfter || 5));
        say(item, `Many photos are arriving at once; sending again in ${seconds} s.`, "waiting");
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        return upload(item);
      }
      // 503 is the wall too busy to take the photo now (many guests at once), or the host's
      // pause: the first passes by itself, so the photo is sent again without asking.
      if (error instanceof ApiError && error.status === 503 && item.busyRetries < BUSY_RETRIES
          && !(await pausedNow())) {
        item.busyRetries += 1;
        const seconds = Math.max(2, Math.min(60, error.retryAfter || 5));
        say(item, `The wall is busy with many photos at once; trying again in ${seconds} s.`,
          "waiting");
        const wait = seconds * 1000 + Math.random() * BUSY_JITTER_MS;
        await new Promise((resolve) => setTimeout(resolve, wait));
        return upload(item);
      }
      const message = error instanceof Error ? error.message : String(error);
      say(item, sentence(message), "failed");
      // Sending again helps when the network, the server or the host's pause was in the way,
      // not when the file itself was refused (not a photo, too large).
      const status = error instanceof ApiError ? error.status : 0;
      item.part(".retry").hidden = status >= 400 && status < 500 && status !== 408 && status !== 429;
      if (error instanceof ApiError && error.status === 503) {
        $("notice").textContent = sentence(message);
        $("notice").hidden = false;
      }
    }
    return undefined;
  }

  function queue(item) {
    item.retries = 0;
    item.busyRetries = 0;
    say(item, "Waiting to be sent\u2026", "waiting");
    sending = sending.then(() => upload(item));
  }

  function chosen(event) {
    const files = [...event.target.files];
    event.target.value = "";  // choosing the same photo again is a new upload
    for (const file of files) {
      const item = addItem(file.name);
      item.file = file;
      showThumb(item, URL.createObjectURL(file));
      queue(item);
    }
    if (files.length) $("sent").scrollIntoView({behavior: "smooth", block: "start"});
  }

  // --- what became of a photo ----------------------------------------------------------------

  function isCell(value) { return Number.isInteger(value) && value >= 0; }

  /** Show a status answer ({id, status, row, col}) and plan the next question. */
  function update(item, answer) {
    clearTimeout(item.timer);
    const status = String(answer.status || "");
    const placed = isCell(answer.row) && isCell(answer.col);
    item.status = placed ? "placed" : status;
    item.element.dataset.id = item.id;
    setProgress(item, null);
    if (placed) {
      const moved = item.row !== null && (item.row !== answer.row || item.col !== answer.col);
      item.row = answer.row;
      item.col = answer.col;
      say(item, moved ? "It moved to a better place on the wall." : "It is on the wall!", "placed");
      // Drawn again only when it moved: neighbours change, but fetching the wall for each
      // guest's photo every half minute would load the event's Wi-Fi for little.
      if (moved || !item.spotDrawn) showSpot(item);
      item.timer = setTimeout(() => poll(item), PLACED_POLL_MS);
      return;
    }
    item.row = item.col = null;
    item.spotDrawn = false;
    item.part(".spot").hidden = true;
    if (FINAL.includes(status)) {
      say(item, status === "rejected"
        ? "The host did not put this photo on the wall."
        : "This photo was taken off the wall by the host.", "gone");
      item.forgotten = true;
      remember();
      return;
    }
    // Waiting photos are "pending", with the reason: the host's approval, or a full wall.
    const reason = String(answer.reason || "");
    say(item, reason === "full" || status === "overflow"
      ? "The wall is full: your photo is on the waiting list, in case a place frees up."
      : reason === "moderation"
        ? "Received! It will appear once the host has approved it."
        : "Received! It is waiting for its place.", "waiting");
    const delay = PENDING_POLL_MS[Math.min(item.polls, PENDING_POLL_MS.length - 1)];
    item.polls += 1;
    item.timer = setTimeout(() => poll(item), delay);
  }

  async function poll(item) {
    if (document.hidden) {
      // Ask again when the guest looks at the page again; phones throttle hidden pages anyway.
      item.sleeping = true;
      return;
    }
    try {
      const answer = await api("GET", `/api/photos/${encodeURIComponent(item.id)}`);
      update(item, answer);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        update(item, {status: "removed"});
        return;
      }
      // The server is away for a moment: keep asking, slowly.
      item.timer = setTimeout(() => poll(item), PENDING_POLL_MS[PENDING_POLL_MS.length - 1]);
    }
  }

  function wake() {
    if (document.hidden) return;
    checkPaused();
    for (const item of items) {
      if (item.sleeping) {
        item.sleeping = false;
        poll(item);
      }
    }
  }

  function wallSnapshot() {
    const now = Date.now();
    if (!wallCache || now - wallCache.time > WALL_FRESH_MS) {
      wallCache = {time: now, promise: api("GET", "/api/wall")};
      wallCache.promise.catch(() => { wallCache = null; });
    }
    return wallCache.promise;
  }

  const targetLoaded = new Promise((resolve) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => resolve(null);
    image.src = "/api/target.jpg";
  });

  /** The wall zoomed to the photo's cell: its neighbours, the target faint where none yet. */
  async function showSpot(item) {
    const figure = item.part(".spot");
    const caption = item.part(".spot-caption");
    const {row, col} = item;
    caption.textContent = `Row ${numberFormat.format(row + 1)}, column ${numberFormat.format(col + 1)}`;
    figure.hidden = false;
    let snapshot;
    try {
      snapshot = await wallSnapshot();
    } catch (_) {
      return;  // the caption says where; the picture comes with the next answer
    }
    if (item.row !== row || item.col !== col) return;  // a newer answer is being shown
    const target = await targetLoaded;
    const {cols, rows} = snapshot.grid;
    const across = Math.min(SPOT_CELLS, cols);
    const down = Math.min(SPOT_CELLS, rows);
    const view = {
      col: Math.max(0, Math.min(cols - across, col - Math.floor(across / 2))),
      row: Math.max(0, Math.min(rows - down, row - Math.floor(down / 2))),
      cols: across, rows: down,
    };
    // Cells keep the wall's shape: the target's, cut into cols x rows.
    const cellAspect = target ? (target.naturalWidth / cols) / (target.naturalHeight / rows) : 1;
    const frame = item.part(".spot-frame");
    frame.style.aspectRatio = `${across * cellAspect} / ${down}`;
    const faint = item.part(".spot-target");
    if (target) {
      faint.src = target.src;
      faint.style.width = `${100 * cols / across}%`;
      faint.style.height = `${100 * rows / down}%`;
      faint.style.left = `${-100 * view.col / across}%`;
      faint.style.top = `${-100 * view.row / down}%`;
    }
    const ring = item.part(".spot-ring");
    ring.style.left = `${100 * (col - view.col) / across}%`;
    ring.style.top = `${100 * (row - view.row) / down}%`;
    ring.style.width = `${100 / across}%`;
    ring.style.height = `${100 / down}%`;

    const canvas = item.part(".spot-tiles");
    const wall = item.wall || new Wall(canvas, {concurrency: 6});
    item.wall = wall;
    wall.setGrid(cols, rows);
    wall.view = view;
    const width = Math.max(1, frame.clientWidth) * Math.min(window.devicePixelRatio || 1, 3);
    wall.resize(width, width * down / (across * cellAspect));
    wall.cells.clear();
    wall.where.clear();
    wall.redraw();
    const shown = snapshot.tiles.filter((tile) => wall.visible(tile.row, tile.col)
                                        && !(tile.row === row && tile.col === col));
    wall.place(item.id, row, col, {urgent: true});
    for (const tile of shown) wall.place(tile.id, tile.row, tile.col);
    showThumbOnce(item);
    item.spotDrawn = true;
    frame.classList.remove("zoom");
    void frame.offsetWidth;  // restart the zoom animation
    frame.classList.add("zoom");

    const overview = item.part(".overview-wall");
    const mark = item.part(".overview-mark");
    const overviewWidth = Math.min(1024, Math.max(320, cols * 8));
    const source = `/api/wall.jpg?width=${overviewWidth}&v=${encodeURIComponent(String(snapshot.version))}`;
    if (item.part(".overview").open) overview.src = source;
    else overview.dataset.src = source;
    mark.style.left = `${100 * col / cols}%`;
    mark.style.top = `${100 * row / rows}%`;
    mark.style.width = `${100 / cols}%`;
    mark.style.height = `${100 / rows}%`;
  }

  /** A restored photo has no local file: its tile is its thumbnail. */
  function showThumbOnce(item) {
    const thumb = item.part(".upload-thumb");
    if (!thumb.getAttribute("src") || thumb.classList.contains("missing")) {
      showThumb(item, `/api/tiles/${encodeURIComponent(item.id)}.jpg?at=${item.row}-${item.col}`);
    }
  }

  function restore() {
    for (const entry of remembered()) {
      const item = addItem(entry.name || "Photo");
      item.id = entry.id;
      item.element.dataset.id = entry.id;
      say(item, "Checking\u2026", "waiting");
      setProgress(item, null);
      poll(item);
    }
  }

  /** Whether the host has paused uploads now (false when the wall does not say). */
  async function pausedNow() {
    try {
      const info = await api("GET", "/api/info");
      return Boolean(info && info.paused);
    } catch (_) {
      return false;
    }
  }

  /** Say so before anyone picks a photo when the host has paused uploads. */
  async function checkPaused() {
    try {
      const info = await api("GET", "/api/info");
      if (info && info.paused) {
        $("notice").textContent = "The host has paused uploads for a moment; try again soon.";
        $("notice").hidden = false;
      } else if (items.every((item) => item.element.dataset.state !== "failed")) {
        $("notice").hidden = true;
      }
    } catch (_) { /* the upload itself will say what is wrong */ }
  }

  function start() {
    checkPaused();
    $("choose").addEventListener("change", chosen);
    $("camera").addEventListener("change", chosen);
    document.addEventListener("visibilitychange", wake);
    // The overview picture is loaded only when asked for (it is the largest thing here).
    document.addEventListener("toggle", (event) => {
      const details = event.target;
      if (!(details instanceof HTMLDetailsElement) || !details.open) return;
      const image = details.querySelector(".overview-wall");
      if (image && image.dataset.src) {
        image.src = image.dataset.src;
        delete image.dataset.src;
      }
    }, true);
    restore();
  }

  start();
})();

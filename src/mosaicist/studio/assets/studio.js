// mosaicist studio: the page's logic, plain JavaScript against the studio's HTTP API.
//
// The page keeps only what the user chose: the picture (an uploaded target id), the
// tile source, and the settings they changed (`changed`: MosaicOptions names -> values).
// Everything else (defaults, presets, checks, the command line) comes from the server,
// so that what the page shows is what `mosaicist make` does.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN = document.querySelector('meta[name="mosaicist-token"]').content;
  const STORAGE_KEY = "mosaicist-studio";
  const PREVIEW_DELAY_MS = 250;
  const TERMINAL = ["done", "failed", "cancelled", "interrupted"];

  // Settings drawn by their own controls rather than from their declarations.
  const SIZE_SETTINGS = ["cell_px", "cells", "print_size", "dpi"];
  // The basic settings, in the order shown; the rest go under "Advanced".
  const BASIC_ORDER = ["tile_px", "metric", "max_uses", "min_spacing", "tint", "augment"];
  // Settings the page never shows (not about the picture).
  const HIDDEN_SETTINGS = ["compute_metrics"];
  // Plain-language labels, used when the server sends none (it sends its own words:
  // mosaicist.studio._form, where the page's labels, help and choice names are kept).
  const LABELS = {
    preset: "Style",
    tile_px: "Tile size",
    match_px: "Comparison size",
    aspect: "Tile shape",
    limit: "Use only the first photos",
    adaptive: "Smaller cells where there is detail",
    detail: "Detail that splits a cell",
    crop: "Where photos are cut",
    colour_profiles: "Colour profiles",
    dedupe: "Drop near-identical photos",
    identical_photos: "Photos in the collection twice",
    max_target_pixels: "Largest picture accepted",
    metric: "Colour matching",
    augment: "Mirrored and turned photos",
    tint: "Colour correction",
    tint_max: "Stronger correction where needed",
    contrast: "Contrast correction",
    max_uses: "Most uses of one photo",
    min_uses: "Least uses of every photo",
    min_spacing: "Distance between repeats",
    assign: "How repeats are solved",
    search: "Finding the closest photo",
    device: "Run on",
    overlay: "Blend the picture over the mosaic",
    jpeg_quality: "Picture quality (JPEG, WebP)",
    dzi_tile_size: "Zoom tile size",
    dzi_overlap: "Zoom tile overlap",
    dzi_format: "Zoom tile format",
  };
  const UNITS = {tile_px: "px", match_px: "px", max_target_pixels: "pixels",
                 dzi_tile_size: "px", dzi_overlap: "px", min_spacing: "cells"};
  const CHOICE_LABELS = {
    metric: {seed: "Plain red, green and blue", lab: "Lab (closer to the eye)", oklab: "Oklab (closer to the eye)"},
    augment: {none: "No", flips: "Mirrored too", rotations: "Turned too", all: "Mirrored and turned"},
    crop: {centre: "In the middle", subject: "Around the subject"},
    colour_profiles: {ignore: "Ignored", convert: "Respected"},
    assign: {optimal: "Best", greedy: "Quick"},
  };
  // Settings a run card never lists as changed: the card shows the grid they make.
  const CARD_SKIPPED = ["preset", "cell_px", "cells", ...HIDDEN_SETTINGS];
  const SOURCE_LABELS = {
    cifar10: "CIFAR-10: 50,000 small photos (about 160 MB)",
    cifar100: "CIFAR-100: 50,000 small photos (about 160 MB)",
    galaxy10: "Galaxy10: 17,736 galaxy images",
  };
  const DOWNLOADS = [
    ["png", "PNG image"], ["jpeg", "JPEG image"], ["tiff", "Pyramidal TIFF"],
    ["deepzoom_zip", "Deep Zoom (zip)"], ["placements_csv", "Placements (CSV)"],
    ["placements_json", "Placements (JSON)"], ["report", "Quality report (JSON)"],
  ];

  const state = {
    server: null,          // GET /api/state
    declared: new Map(),   // setting name -> its declaration
    presets: new Map(),    // preset name -> {name, description, settings}
    target: null,          // {id, name, width, height}
    tiles: null,           // the tile source spec that is indexed and in use
    changed: {},           // settings the user gave
    size: {mode: "across", across: null, printWidth: 60, printHeight: 40, unit: "cm", dpi: 300, cells: 2500},
    indexJob: null, indexSource: null, indexPending: false,
    indexed: new Set(),    // index keys (see indexKey) known to be made
    indexFailed: new Set(),
    indexedSettings: null, // the settings (and target) of the last index job asked for
    making: null, makeSource: null,
    cancelling: null,      // the run whose Cancel was asked for: "Cancelling…" until it ends
    starting: false,       // a Make sent, its run not followed yet
    shown: null,           // the run shown under "Your mosaic"
    previewTimer: 0, previewAbort: null, previewUrl: null,
    commandAbort: null,
    folderPath: null, folderParent: null, folderAsked: 0,
    targetAsked: 0,        // pictures sent (uploads, examples): only the last one's answer counts
    indexAsked: 0,         // index requests sent: only the last one's answer counts
  };

  // --- talking to the server ---------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status = 0) {
      super(message);
      this.status = status;  // the HTTP status of a refusal; 0 for the page's own errors
    }
  }

  /** A sentence as the page shows it: capital first letter, full stop at the end. */
  function sentence(text) {
    let message = String(text || "").trim().replace(/\s+/g, " ");
    if (!message) return "Something went wrong.";
    // "the request..." starts a sentence; "notes.jpg: ..." or "max_uses ..." keep their case,
    // and so does any name before "NAME: problem" ("holiday photo.jpg: ...", a folder typed
    // as "photos: ..."): a file is named as it is called, not as "Holiday photo.jpg".
    const named = /^([^:]{1,300}): /.exec(message);
    const name = named ? named[1] : "";
    if (/^[a-z]+(\s|$)/.test(message) && !(name && (/[./\\]/.test(name) || !/\s/.test(name)))) {
      message = message[0].toUpperCase() + message.slice(1);
    }
    return /[.!?]$/.test(message) ? message : message + ".";
  }

  async function api(method, url, body, {signal, raw = false} = {}) {
    const headers = {Accept: "application/json"};
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    if (method !== "GET" && method !== "HEAD") headers["X-Mosaicist-Token"] = TOKEN;
    let response;
    try {
      response = await fetch(url, {method, headers, body: payload, signal, credentials: "same-origin", cache: "no-store"});
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError("The studio is not answering: is mosaicist studio still running?");
    }
    if (!response.ok) {
      let message = `The studio answered ${response.status} ${response.statusText || ""}`.trim();
      try {
        const data = await response.json();
        if (data && typeof data.error === "string") message = data.error;
      } catch (_) { /* not JSON: keep the status line */ }
      throw new ApiError(sentence(message), response.status);
    }
    if (raw) return response;
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  function showError(error) {
    if (error && error.name === "AbortError") return;
    if (!(error instanceof ApiError)) console.error(error);
    $("error-text").textContent = sentence(error instanceof Error ? error.message : error);
    $("error").hidden = false;
  }
  function clearError() { $("error").hidden = true; }

  /** Run an action from a button: errors become the one sentence on the page. */
  function guarded(action) {
    return async (...args) => {
      try { await action(...args); } catch (error) { showError(error); }
    };
  }

  // --- small helpers -------------------------------------------------------------------

  const numberFormat = new Intl.NumberFormat();
  const fmt = (value) => numberFormat.format(value);

  function element(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function save() {
    const kind = document.querySelector('input[name="tiles-kind"]:checked').value;
    const saved = {
      tilesKind: kind, folder: $("folder-path").value, builtin: $("builtin").value,
      array: $("array-path").value, tiles: state.tiles, changed: state.changed, size: state.size,
      target: state.target,
      // The mosaic shown and the run being made: a reload (or Back to the page) shows the
      // mosaic again, or the one the run made while the page was away, not an empty page.
      shown: state.shown, making: state.making,
    };
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(saved)); } catch (_) { /* private mode */ }
  }

  function restore() {
    try { return JSON.parse(localStorage.getItem(STORAGE_KEY) || "null"); } catch (_) { return null; }
  }

  /** Height of a cell or tile `width` wide at aspect "W:H", as mosaicist.aspect.height_for. */
  function heightFor(width, aspect) {
    const match = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(String(aspect || "1:1"));
    const [aw, ah] = match ? [Number(match[1]), Number(match[2])] : [1, 1];
    if (!aw || !ah) return width;
    return Math.max(1, Math.floor((2 * width * ah + aw) / (2 * aw)));
  }

  // --- settings -----------------------------------------------------------------------

  function normaliseSetting(raw) {
    const kinds = {int: "int", integer: "int", float: "float", number: "float", str: "str",
                   string: "str", text: "str", bool: "bool", boolean: "bool"};
    return {
      name: raw.name,
      label: raw.label || LABELS[raw.name] || raw.name.replace(/_/g, " "),
      help: raw.help || "",
      kind: kinds[String(raw.kind || "str").toLowerCase()] || "str",
      optional: Boolean(raw.optional) || raw.default === null,
      // What "no value" means ("No limit"), and the value a cleared "no value" box gives.
      noneLabel: raw.none_label || "None",
      firstValue: raw.first_value ?? null,
      default: raw.default,
      choices: Array.isArray(raw.choices) && raw.choices.length ? raw.choices : null,
      choiceLabels: raw.choice_labels || null,
      low: raw.low ?? null,
      high: raw.high ?? null,
      unit: raw.unit_label ?? UNITS[raw.name] ?? "",
      group: raw.group || (BASIC_ORDER.includes(raw.name) ? "basic" : "advanced"),
    };
  }

  function normalisePresets(raw) {
    const list = Array.isArray(raw) ? raw : Object.entries(raw || {}).map(([name, value]) => ({name, ...value}));
    return new Map(list.map((preset) => [preset.name, {
      name: preset.name, label: preset.label || preset.name[0].toUpperCase() + preset.name.slice(1),
      description: preset.description || "", settings: preset.settings || {},
    }]));
  }

  function currentPreset() {
    const declared = state.declared.get("preset");
    const name = state.changed.preset ?? (declared ? declared.default : null);
    return state.presets.get(name) || null;
  }

  /** The value a setting is given now: given, else from the preset, else its default
      (None where it is: "no limit", "automatic"). */
  function chosen(name) {
    if (Object.prototype.hasOwnProperty.call(state.changed, name)) return state.changed[name];
    const preset = currentPreset();
    if (preset && Object.prototype.hasOwnProperty.call(preset.settings, name)) return preset.settings[name];
    const declared = state.declared.get(name);
    return declared ? declared.default : null;
  }

  /** The value a setting has now, as the mosaic is made: the automatic comparison size too. */
  function effective(name) {
    const value = chosen(name);
    if (name === "match_px" && value === null) return automaticMatchPx(effective("tile_px"));
    return value;
  }

  /** The comparison size when not given, as mosaicist.options.default_match_px. */
  function automaticMatchPx(tilePx) {
    const tile = Number(tilePx);
    return tile <= 64 ? tile : 32;
  }

  function helpText(text) {
    // Declarations may name other settings as {name}: show their labels.
    return String(text).replace(/\{(\w+)\}/g, (_, name) => {
      const other = state.declared.get(name);
      return other ? `“${other.label.toLowerCase()}”` : name;
    });
  }

  function choiceLabel(setting, value) {
    return setting.choiceLabels?.[value] || CHOICE_LABELS[setting.name]?.[value] || value;
  }

  /** One setting's field: label, control, help. */
  function settingField(setting) {
    const id = `setting-${setting.name}`;
    const field = element("div", {className: "field", "data-setting": setting.name});
    const hint = setting.help ? element("p", {className: "hint", id: `${id}-help`, text: helpText(setting.help)}) : null;
    const described = hint ? `${id}-help` : undefined;
    let control;
    if (setting.kind === "bool") {
      control = element("input", {type: "checkbox", id, "aria-describedby": described});
      field.append(element("label", {className: "check", for: id}, control, setting.label));
    } else if (setting.choices) {
      control = element("select", {id, "aria-describedby": described});
      if (setting.optional) control.append(element("option", {value: "", text: "None"}));
      for (const choice of setting.choices) {
        control.append(element("option", {value: choice, text: choiceLabel(setting, choice)}));
      }
      field.append(element("label", {for: id, text: setting.label}), control);
    } else if (setting.kind === "float" && setting.low === 0 && setting.high === 1) {
      // A fraction: a slider with its number beside it.
      control = element("input", {type: "number", id, min: 0, max: 1, step: 0.05, "aria-describedby": described});
      const slider = element("input", {type: "range", min: 0, max: 1, step: 0.05, "aria-hidden": "true", tabindex: -1, className: "slider"});
      slider.addEventListener("input", () => { control.value = slider.value; control.dispatchEvent(new Event("input")); });
      control.slider = slider;
      const row = element("div", {className: "row"}, slider, control);
      field.append(element("label", {for: id, text: setting.label}), row);
      if (setting.optional) row.append(noneBox(setting, control));
    } else if (setting.kind === "int" || setting.kind === "float") {
      control = element("input", {
        type: "number", id, step: setting.kind === "int" ? 1 : "any", inputmode: setting.kind === "int" ? "numeric" : "decimal",
        min: setting.low ?? undefined, max: setting.high ?? undefined, "aria-describedby": described,
      });
      const row = element("div", {className: "row"}, control);
      if (setting.unit) row.append(element("span", {className: "unit", text: setting.unit}));
      field.append(element("label", {for: id, text: setting.label}), row);
      if (setting.optional) row.append(noneBox(setting, control));
    } else {
      control = element("input", {type: "text", id, spellcheck: "false", "aria-describedby": described});
      if (setting.optional) control.placeholder = setting.noneLabel.toLowerCase();
      field.append(element("label", {for: id, text: setting.label}), control);
    }
    if (hint) field.append(hint);
    control.dataset.setting = setting.name;
    const onChange = () => settingChanged(setting, control);
    control.addEventListener(setting.kind === "bool" || setting.choices ? "change" : "input", onChange);
    return field;
  }

  /**
   * The tick box of a number that may have no value ("No limit", "Automatic", "Off"):
   * "none" cannot be typed into a number field. Ticked, the setting is None and the field
   * empty (an emptied field ticks it); cleared, the field takes a number again.
   */
  function noneBox(setting, control) {
    const box = element("input", {type: "checkbox", id: `${control.id}-none`, className: "none-box",
                                  "aria-describedby": control.getAttribute("aria-describedby")});
    control.placeholder = setting.noneLabel.toLowerCase();
    control.noneBox = box;
    box.addEventListener("change", () => {
      if (box.checked) {
        control.value = "";
      } else {
        const value = firstValue(setting);
        control.value = value === null ? "" : String(value);
        if (control.slider && value !== null) control.slider.value = value;
      }
      settingChanged(setting, control);
    });
    return element("label", {className: "check none", for: box.id}, box, setting.noneLabel);
  }

  /** The number a setting takes when its "no value" box is cleared. */
  function firstValue(setting) {
    if (setting.name === "match_px") return automaticMatchPx(effective("tile_px"));
    const preset = currentPreset()?.settings?.[setting.name];
    let value = preset ?? setting.firstValue ?? setting.low ?? 1;
    // A stronger correction below the correction is refused: start at the correction.
    if (setting.name === "tint_max") value = Math.max(value, Number(effective("tint")) || 0);
    return value;
  }

  function readControl(setting, control) {
    if (setting.kind === "bool") return control.checked;
    const text = control.value.trim();
    if (text === "") return setting.optional ? null : undefined;
    if (setting.choices) return text;
    if (setting.kind === "int") return Number.isFinite(Number(text)) ? Number(text) : text;
    if (setting.kind === "float") return Number.isFinite(Number(text)) ? Number(text) : text;
    return text;
  }

  function settingChanged(setting, control) {
    // Half a number ("1e", "-"): the field reads as empty, which is no "no limit". The
    // setting keeps its value until the number is whole.
    if (control.validity?.badInput) return;
    const value = readControl(setting, control);
    if (value === undefined) delete state.changed[setting.name];
    else state.changed[setting.name] = value;
    if (setting.name === "preset") renderPresetHint();
    if (control.slider && value !== null && value !== undefined) control.slider.value = value;
    refreshControls(control);
    settingsChanged();
  }

  /** Show every control's current value (except the one being typed in). */
  function refreshControls(except = null) {
    for (const control of document.querySelectorAll("#settings [data-setting]:is(input, select)")) {
      const name = control.dataset.setting;
      const setting = state.declared.get(name);
      if (!setting) continue;
      const field = control.closest(".field");
      field?.classList.toggle("changed", Object.prototype.hasOwnProperty.call(state.changed, name));
      const value = chosen(name);
      if (control.noneBox) {
        control.noneBox.checked = value === null || value === undefined;
        // What "automatic" comes to, where the page knows it (the field is too narrow for
        // "automatic: 32"; the tick box beside it says "Automatic").
        control.placeholder = value === null && name === "match_px" ? String(effective(name))
                                                                     : setting.noneLabel.toLowerCase();
      }
      if (control === except) continue;
      if (setting.kind === "bool") control.checked = Boolean(value);
      else control.value = value === null || value === undefined ? "" : String(value);
      if (control.slider) control.slider.value = value ?? 0;
    }
    const printing = state.size.mode === "print";
    const tile = $("setting-tile_px");
    if (tile) {
      tile.disabled = printing;
      tile.title = printing ? "Chosen to fill the print" : "";
    }
    renderSize();
  }

  function renderPresetHint() {
    const hint = $("preset-hint");
    const preset = currentPreset();
    if (hint) hint.textContent = preset ? sentence(preset.description) : "";
  }

  function buildSettings() {
    const declared = state.server.settings.map(normaliseSetting)
      .filter((setting) => !HIDDEN_SETTINGS.includes(setting.name));
    state.declared = new Map(declared.map((setting) => [setting.name, setting]));
    state.presets = normalisePresets(state.server.presets);

    const presetField = $("preset-field");
    presetField.replaceChildren();
    const preset = state.declared.get("preset");
    if (preset) {
      const id = "setting-preset";
      const select = element("select", {id, "data-setting": "preset", "aria-describedby": "preset-hint"});
      const names = preset.choices || [...state.presets.keys()];
      for (const name of names) {
        const label = preset.choiceLabels?.[name] || state.presets.get(name)?.label || name[0].toUpperCase() + name.slice(1);
        select.append(element("option", {value: name, text: label}));
      }
      select.addEventListener("change", () => settingChanged(preset, select));
      presetField.append(element("label", {for: id, text: preset.label}), select,
                         element("p", {className: "hint", id: "preset-hint"}));
    }

    const basic = declared.filter((setting) => setting.group === "basic" && !SIZE_SETTINGS.includes(setting.name)
                                               && setting.name !== "preset");
    basic.sort((a, b) => rank(a.name) - rank(b.name));
    const advanced = declared.filter((setting) => !basic.includes(setting) && !SIZE_SETTINGS.includes(setting.name)
                                                  && setting.name !== "preset");
    $("basic-settings").replaceChildren(...basic.map(settingField));
    $("advanced-settings").replaceChildren(...advanced.map(settingField));
    renderPresetHint();
    refreshControls();
  }

  function rank(name) {
    const index = BASIC_ORDER.indexOf(name);
    return index < 0 ? BASIC_ORDER.length : index;
  }

  // The size: cells across (sent as cell_px, from the picture's width) or a print.
  function acrossDefault() {
    if (!state.target) return null;
    const cell = Number(effective("cell_px")) || 16;
    return Math.max(1, Math.floor(state.target.width / cell));
  }

  function sizeSettings() {
    const size = state.size;
    const settings = {};
    if (size.mode === "print") {
      const width = Number(size.printWidth), height = Number(size.printHeight);
      settings.print_size = `${width}x${height}${size.unit}`;
      settings.dpi = Math.round(Number(size.dpi));
      if (size.cells) settings.cells = Math.round(Number(size.cells));
    } else if (size.across && state.target) {
      settings.cell_px = Math.min(1024, Math.max(1, Math.floor(state.target.width / Number(size.across))));
    }
    return settings;
  }

  /** Every setting the user gave, as MosaicOptions names, for the server. */
  function settingsPayload() {
    const settings = {...state.changed, ...sizeSettings()};
    if (state.size.mode === "print") delete settings.tile_px;  // the print decides it
    return settings;
  }

  function renderSize() {
    const printing = state.size.mode === "print";
    $("size-across").hidden = printing;
    $("size-print").hidden = !printing;
    const across = state.size.across ?? acrossDefault();
    if (document.activeElement !== $("across")) $("across").value = across ?? "";
    $("across-range").value = across ?? 80;
    $("across").closest(".field").classList.toggle("changed", Boolean(state.size.across));
    const summary = $("size-summary");
    if (!state.target) {
      summary.textContent = printing ? "" : "Choose a picture to see the size.";
      return;
    }
    const aspect = effective("aspect");
    if (printing) {
      const {printWidth, printHeight, unit, dpi} = state.size;
      const perInch = {cm: 2.54, mm: 25.4, in: 1}[unit];
      const pixels = [Math.round(printWidth / perInch * dpi), Math.round(printHeight / perInch * dpi)];
      // Sizes being typed (empty, negative, no dpi) have no pixels: the preview says why.
      summary.textContent = printWidth > 0 && printHeight > 0 && dpi >= 1
                            && pixels.every((side) => Number.isFinite(side) && side > 0)
        ? `A print of ${printWidth} × ${printHeight} ${unit} at ${dpi} dpi is about ${fmt(pixels[0])} × ${fmt(pixels[1])} pixels.`
        : "";
      return;
    }
    const cell = sizeSettings().cell_px ?? Number(effective("cell_px"));
    const cols = Math.floor(state.target.width / cell);
    const rows = Math.floor(state.target.height / heightFor(cell, aspect));
    const tile = Number(effective("tile_px"));
    const width = cols * tile, height = rows * heightFor(tile, aspect);
    // A tile size being typed (negative, a fraction, over the limit) makes no mosaic: its
    // size is left out rather than shown as "-20 × 15 pixels" (the preview says why).
    const declared = state.declared.get("tile_px");
    const tileValid = Number.isInteger(tile) && tile >= (declared?.low ?? 1)
                      && (declared?.high === null || declared?.high === undefined || tile <= declared.high);
    const cells = `${fmt(cols)} × ${fmt(rows)} cells (${fmt(cols * rows)} photos)`;
    summary.textContent = !(cols > 0 && rows > 0) ? "The picture is smaller than one cell at this size."
      : tileValid ? `${cells}; the mosaic is ${fmt(width)} × ${fmt(height)} pixels.` : `${cells}.`;
  }

  function bindSize() {
    for (const radio of document.querySelectorAll('input[name="size-mode"]')) {
      radio.addEventListener("change", () => { state.size.mode = radio.value; refreshControls(); settingsChanged(); });
    }
    const setAcross = (value) => {
      const number = Math.round(Number(value));
      state.size.across = value === "" || !Number.isFinite(number) || number < 1 ? null : number;
      renderSize();
      settingsChanged();
    };
    $("across").addEventListener("input", () => setAcross($("across").value));
    $("across-range").addEventListener("input", () => { $("across").value = $("across-range").value; setAcross($("across-range").value); });
    const bind = (id, key, parse = Number) => {
      $(id).addEventListener("input", () => { state.size[key] = parse($(id).value); renderSize(); settingsChanged(); });
    };
    bind("print-width", "printWidth");
    bind("print-height", "printHeight");
    bind("print-unit", "unit", String);
    bind("print-dpi", "dpi");
    bind("print-cells", "cells");
  }

  function showSizeControls() {
    const size = state.size;
    for (const radio of document.querySelectorAll('input[name="size-mode"]')) radio.checked = radio.value === size.mode;
    $("print-width").value = size.printWidth;
    $("print-height").value = size.printHeight;
    $("print-unit").value = size.unit;
    $("print-dpi").value = size.dpi;
    $("print-cells").value = size.cells;
  }

  function settingsChanged() {
    save();
    schedulePreview();
  }

  // --- 1. the picture ----------------------------------------------------------------

  function setTarget(target) {
    state.target = target;
    const thumb = $("target-thumb");
    thumb.src = `/api/targets/${encodeURIComponent(target.id)}`;
    thumb.alt = `The chosen picture, ${target.name}`;
    thumb.hidden = false;
    $("drop-text").innerHTML = "<span class=\"link\">Choose another picture</span> or drop one here";
    $("target-info").textContent = `${target.name} · ${fmt(target.width)} × ${fmt(target.height)} pixels`;
    renderSize();
    save();  // kept over a reload, as the photos and settings are
    schedulePreview();
  }

  /** The picture chosen before the page was reloaded, when the studio still stores it. */
  async function restoreTarget(saved) {
    const target = saved?.target;
    if (!target || typeof target !== "object" || !/^[0-9a-f]{32}$/.test(String(target.id))
        || !(Number(target.width) > 0) || !(Number(target.height) > 0)) return;
    try {
      await api("HEAD", `/api/targets/${target.id}`, undefined, {raw: true});
    } catch (_) {
      return;  // removed since (unused for a day), or another studio's: chosen again
    }
    if (state.target) return;  // a picture chosen meanwhile wins
    setTarget({id: target.id, name: String(target.name || "target"),
               width: Number(target.width), height: Number(target.height)});
  }

  async function uploadTarget(file) {
    if (!file) return;
    clearError();
    // Checked here, as the server checks it, before the bytes are sent: a file over the
    // server's whole request limit would be cut off with a sentence about "the request
    // body" (or the connection dropped), naming neither the file nor the limit.
    const limit = Number(state.server?.max_upload_bytes);
    if (limit > 0 && file.size > limit) {
      $("target-file").value = "";
      throw new ApiError(`${file.name}: the file is ${(file.size / 2 ** 20).toFixed(1)} MiB, over the limit of ${Math.floor(limit / 2 ** 20)} MiB.`);
    }
    $("target-info").textContent = `Reading ${file.name}…`;
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      await chooseTarget(() => api("POST", "/api/targets", form));
    } finally {
      $("target-file").value = "";
    }
  }

  /**
   * The picture `send` uploads (or picks) becomes the target, unless another was chosen
   * since: a big photo still being read must not replace the one picked after it when
   * its answer comes last (nor its refusal be shown over the newer picture).
   */
  async function chooseTarget(send) {
    const asked = ++state.targetAsked;
    let target;
    try {
      target = await send();
    } catch (error) {
      if (asked !== state.targetAsked) return;
      $("target-info").textContent = state.target ? `${state.target.name} · ${fmt(state.target.width)} × ${fmt(state.target.height)} pixels` : "";
      throw error;
    }
    if (asked === state.targetAsked) setTarget(target);
  }

  function bindTarget() {
    $("target-file").addEventListener("change", guarded(() => uploadTarget($("target-file").files[0])));
    const zone = $("drop-zone");
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => { event.preventDefault(); zone.classList.add("over"); });
    }
    for (const name of ["dragleave", "dragend"]) zone.addEventListener(name, () => zone.classList.remove("over"));
    zone.addEventListener("drop", guarded(async (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer?.files?.[0];
      if (!file) throw new ApiError("Drop a picture file (JPEG, PNG, WebP, TIFF...).");
      await uploadTarget(file);
    }));
    // A file dropped beside the zone must not make the browser leave the studio.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    window.addEventListener("resize", fitCommand);
  }

  function buildExamples() {
    const examples = state.server.examples || [];
    $("examples-box").hidden = examples.length === 0;
    $("examples").replaceChildren(...examples.map((example) => {
      const button = element("button", {type: "button", "data-example": example.name},
        element("img", {src: `/api/examples/${encodeURIComponent(example.name)}`, alt: "", loading: "lazy"}),
        element("span", {text: example.title || example.name}));
      button.addEventListener("click", guarded(async () => {
        clearError();
        await chooseTarget(() => api("POST", "/api/targets/example", {name: example.name}));
      }));
      return element("li", {}, button);
    }));
  }

  // --- 2. the tiles ------------------------------------------------------------------

  function chosenTiles() {
    const kind = document.querySelector('input[name="tiles-kind"]:checked').value;
    if (kind === "builtin") return $("builtin").value;
    const text = (kind === "folder" ? $("folder-path") : $("array-path")).value.trim();
    if (!text) {
      throw new ApiError(kind === "folder" ? "Type a folder of photos, or pick one with Browse."
                                           : "Type the path of an image array file (.npy, .npz or .h5).");
    }
    return text;
  }

  function showTilesKind() {
    const kind = document.querySelector('input[name="tiles-kind"]:checked').value;
    $("folder-body").classList.toggle("inactive", kind !== "folder");
    $("builtin-body").classList.toggle("inactive", kind !== "builtin");
    $("array-body").classList.toggle("inactive", kind !== "array");
  }

  function stopIndexEvents() {
    state.indexSource?.close();
    state.indexSource = null;
  }

  /** What an index is made for: the tiles, and the settings that change it. */
  function indexKey(tiles) {
    return JSON.stringify([tiles, effective("match_px"), effective("aspect"), effective("crop"),
                           effective("colour_profiles")]);
  }

  /** The photos chosen in step 2: index them, then they are the tiles. */
  async function useTiles({quiet = false} = {}) {
    const tiles = chosenTiles();
    clearError();
    state.tiles = null;
    await indexTiles(tiles, {choosing: true, quiet});
  }

  /**
   * Index `tiles` at the current settings (a quick check when the index is current).
   * The preview reads only indexes made already, so a change of tile size, shape, crop
   * or colour profiles indexes again first.
   */
  async function indexTiles(tiles, {choosing = false, quiet = false} = {}) {
    stopIndexEvents();
    state.indexJob = null;  // the job followed until now is no longer what the page waits for
    const key = indexKey(tiles);
    const settings = settingsPayload();
    state.indexPending = true;
    schedulePreview();
    $("skipped").hidden = true;
    $("index-box").hidden = false;
    setProgress($("index-progress"), 0, null);
    $("index-status").textContent = `Looking at ${tiles}…`;
    $("use-tiles").disabled = true;
    // Only the photos asked for last are used: the answer for a folder typed before (slower
    // to come, or a slow network) must not make it the tiles once the newer one is ready.
    const asked = ++state.indexAsked;
    let job;
    try {
      // The target too: with a print size, the tile size the index is made at follows from it.
      ({job} = await api("POST", "/api/index", {tiles, settings, target: state.target?.id ?? null}));
      if (asked !== state.indexAsked) return;
    } catch (error) {
      if (asked !== state.indexAsked) return;
      state.indexPending = false;
      state.indexFailed.add(key);
      $("use-tiles").disabled = false;
      $("index-box").hidden = true;
      $("index-status").textContent = "";
      if (quiet) return;
      throw error;
    } finally {
      if (asked === state.indexAsked) state.indexPending = false;
    }
    state.indexJob = job;
    state.indexedSettings = JSON.stringify([settings, state.target?.id ?? null]);
    $("cancel-index").hidden = false;
    followEvents(`/api/jobs/${encodeURIComponent(job)}`, {
      onSource: (source) => { state.indexSource = source; },
      progress: (event) => {
        setProgress($("index-progress"), event.done, event.total);
        $("index-status").textContent = progressText(event, "Indexing");
      },
      lost: (text) => { $("index-status").textContent = text; },
      finished: (kind, event, status) => indexFinished({tiles, key, job, choosing}, kind, event, status),
    });
  }

  async function indexFinished({tiles, key, job, choosing}, kind, event, status) {
    if (state.indexJob !== job) return;
    state.indexJob = null;
    $("cancel-index").hidden = true;
    $("use-tiles").disabled = false;
    status = status || await api("GET", `/api/jobs/${encodeURIComponent(job)}`).catch(() => null);
    const result = status?.result || event?.data || {};
    const skipped = status?.skipped || result.skipped || [];
    showSkipped(skipped, status?.skipped_count ?? result.skipped_count ?? skipped.length);
    if (kind === "done") {
      setProgress($("index-progress"), 1, 1);
      const count = result.tiles;
      $("index-status").textContent = count ? `Ready: ${fmt(count)} photos from ${tiles}.` : `Ready: ${tiles}.`;
      state.indexed.add(key);
      if (choosing) state.tiles = tiles;
      save();
    } else if (kind === "cancelled") {
      $("index-box").hidden = true;
      $("index-status").textContent = "";
    } else {
      state.indexFailed.add(key);
      $("index-box").hidden = true;
      showError(status?.error || event?.message || "Indexing the photos failed.");
    }
    schedulePreview();
  }

  function showSkipped(skipped, count) {
    if (!count) { $("skipped").hidden = true; return; }
    $("skipped").hidden = false;
    $("skipped-summary").textContent = `${fmt(count)} ${count === 1 ? "file" : "files"} could not be used`
      + (count > skipped.length ? ` (the first ${fmt(skipped.length)} listed)` : "");
    $("skipped-list").replaceChildren(...skipped.slice(0, 500).map((item) => {
      const text = typeof item === "string" ? item
        : [item.path || item.id || item.name, item.reason || item.error].filter(Boolean).join(": ");
      return element("li", {text});
    }));
  }

  // --- the folder browser ----------------------------------------------------------

  async function openFolders() {
    const typed = $("folder-path").value.trim();
    const dialog = $("folders");
    $("folder-roots").replaceChildren(...(state.server.roots || []).map((root) => {
      const button = element("button", {type: "button", className: "secondary", text: root, title: `Go to ${root}`});
      button.addEventListener("click", () => loadFolder(root));
      return button;
    }));
    dialog.showModal();
    await loadFolder(typed || state.server.home || (state.server.roots || [])[0] || "", {fallback: true});
  }

  async function loadFolder(path, {fallback = false} = {}) {
    $("folder-error").hidden = true;
    // Only the folder asked for last is shown: a slower answer for an earlier one
    // (the first listing, while a root was picked) must not replace it.
    const asked = ++state.folderAsked;
    let listing;
    try {
      listing = await api("GET", `/api/folders?path=${encodeURIComponent(path)}`);
      if (asked !== state.folderAsked) return;
    } catch (error) {
      if (asked !== state.folderAsked) return;
      if (fallback && path !== state.server.home) return loadFolder(state.server.home || "");
      $("folder-error").textContent = sentence(error.message);
      $("folder-error").hidden = false;
      return;
    }
    state.folderPath = listing.path;
    state.folderParent = listing.parent ?? null;
    $("folder-current").textContent = listing.path;
    $("folder-up").disabled = !listing.parent;
    const images = listing.images ?? 0;
    $("folder-images").textContent = images === 1 ? "1 picture in this folder." : `${fmt(images)} pictures in this folder.`;
    const list = $("folder-list");
    const folders = listing.folders || [];
    if (folders.length === 0) {
      list.replaceChildren(element("li", {className: "empty", text: "No folders inside."}));
    } else {
      list.replaceChildren(...folders.map((folder) => {
        const button = element("button", {type: "button", text: folder.name, "data-path": folder.path});
        button.addEventListener("click", () => loadFolder(folder.path));
        return element("li", {}, button);
      }));
    }
    const first = list.querySelector("button");
    (first || $("folder-choose")).focus();
  }

  function bindFolders() {
    $("browse").addEventListener("click", guarded(openFolders));
    $("folder-up").addEventListener("click", () => { if (state.folderParent) loadFolder(state.folderParent); });
    $("folder-choose").addEventListener("click", guarded(async () => {
      if (!state.folderPath) return;
      $("folder-path").value = state.folderPath;
      $("tiles-kind-folder").checked = true;
      showTilesKind();
      $("folders").close();
      save();
      await useTiles();
    }));
    $("folder-list").addEventListener("keydown", (event) => {
      const buttons = [...$("folder-list").querySelectorAll("button")];
      const index = buttons.indexOf(document.activeElement);
      if (event.key === "ArrowDown" && index < buttons.length - 1) { buttons[index + 1].focus(); event.preventDefault(); }
      if (event.key === "ArrowUp" && index > 0) { buttons[index - 1].focus(); event.preventDefault(); }
      if (event.key === "Backspace" && state.folderParent) { loadFolder(state.folderParent); event.preventDefault(); }
    });
  }

  // --- progress from server-sent events ------------------------------------------------

  function setProgress(bar, done, total) {
    if (total && Number.isFinite(Number(total)) && Number(total) > 0) {
      bar.max = Number(total);
      bar.value = Math.min(Number(done) || 0, Number(total));
      bar.setAttribute("aria-valuetext", `${Math.round(100 * bar.value / bar.max)}%`);
    } else {
      bar.removeAttribute("value");  // indeterminate
      bar.removeAttribute("aria-valuetext");
    }
  }

  const STAGES = {queued: "Waiting", index: "Indexing the photos", indexing: "Indexing the photos",
                  match: "Matching", matching: "Matching", render: "Drawing", rendering: "Drawing",
                  write: "Writing the files", writing: "Writing the files", report: "Measuring",
                  metrics: "Measuring", deepzoom: "Writing the zoomable pyramid", download: "Downloading",
                  decode: "Reading photos", scan: "Looking for photos", plan: "Looking for photos",
                  outputs: "Writing the files", thumbnail: "Finishing", starting: "Starting",
                  // The library's own progress bars, named for a terminal: said in plain words.
                  features: "Measuring the photos", preparing: "Preparing the photos",
                  "assigning tiles": "Placing the photos", "finding near-duplicates": "Finding near-identical photos", "finding identical photos": "Finding photos that are there twice",
                  "zipping Deep Zoom": "Packing the zoomable view"};

  function progressText(event, fallback) {
    const stage = event.stage ? (STAGES[event.stage] || sentence(event.stage).slice(0, -1)) : fallback;
    const total = Number(event.total);
    let text = stage;
    if (total > 0) {
      const percent = Math.floor(100 * Math.min(1, (Number(event.done) || 0) / total));
      text += ` · ${percent}%`;
      if (total > 1 && Number.isInteger(total)) text += ` (${fmt(Math.floor(event.done || 0))} of ${fmt(total)})`;
    }
    if (event.message && event.message !== event.stage) text += ` · ${event.message}`;
    return text + "…";
  }

  /**
   * Follow a job's events: `progress` events, then one of done/failed/cancelled.
   * When the stream cannot be opened or breaks for good, the job's status is polled;
   * while the browser opens it again and the studio does not answer, `lost` is told why.
   */
  function followEvents(base, {onSource, progress, finished, lost}) {
    let over = false;
    let poller = 0;
    let last = null;       // the last progress event, shown again once the studio answers
    let silent = false;    // the studio did not answer when the stream broke
    const finish = (kind, event, status) => {
      if (over) return;
      over = true;
      clearInterval(poller);
      source.close();
      finished(kind, event, status);
    };
    const source = new EventSource(`${base}/events`);
    onSource(source);
    source.addEventListener("progress", (message) => {
      last = JSON.parse(message.data);
      silent = false;
      progress(last);
    });
    source.addEventListener("open", () => {
      if (silent) { silent = false; progress(last || {}); }
    });
    for (const kind of ["done", "failed", "cancelled", "interrupted"]) {
      source.addEventListener(kind, (message) => {
        let event = {};
        try { event = JSON.parse(message.data); } catch (_) { /* keep empty */ }
        finish(kind, event, null);
      });
    }
    source.addEventListener("error", () => {
      if (over) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser opens the stream again by itself, for as long as it takes: while
        // the studio does not answer (stopped, its terminal closed) the last progress
        // stayed on the page as if the work went on. Said, until it answers again.
        api("GET", base).catch((error) => {
          if (over || !(error instanceof ApiError) || error.status !== 0
              || source.readyState === EventSource.OPEN) return;
          silent = true;
          lost(sentence(error.message));
        });
        return;
      }
      if (poller) return;
      const poll = async () => {
        try {
          const status = await api("GET", base);
          const kind = status.state || status.status;
          if (TERMINAL.includes(kind)) finish(kind, {message: status.error}, status);
          const now = status.progress || status;  // a run's progress, or a job's own fields
          if (!TERMINAL.includes(kind)) progress({stage: now.stage, done: now.done, total: now.total, state: kind});
        } catch (error) {
          finish("failed", {message: error.message}, null);
        }
      };
      poller = setInterval(poll, 1000);
      poll();
    });
  }

  // --- the preview and the command line -------------------------------------------------

  function readyToMake() {
    return Boolean(state.target && state.tiles);
  }

  /**
   * An index a settings change asked for could not be made: a setting the studio refuses
   * (a tile size or shape out of range) is said on the preview line, as every other
   * setting's refusal is, not in the banner too; anything else is the page's error.
   */
  function settingsIndexFailed(error) {
    if (error instanceof ApiError && error.status >= 400 && error.status < 500) {
      $("preview-busy").hidden = true;
      $("preview-status").classList.add("inline-error");
      $("preview-status").textContent = sentence(error.message);
      return;
    }
    showError(error);
  }

  function schedulePreview() {
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(() => { runPreview(); runCommand(); }, PREVIEW_DELAY_MS);
    $("make").disabled = !readyToMake() || Boolean(state.making) || state.starting;
  }

  async function runPreview() {
    state.previewAbort?.abort();
    if (!readyToMake()) {
      $("preview-busy").hidden = true;
      $("preview-status").classList.remove("inline-error");
      $("preview-status").textContent = !state.target ? "Choose a picture to see a preview."
        : state.indexJob ? "The preview comes once the photos are indexed." : "Choose the photos for the tiles to see a preview.";
      return;
    }
    if (state.indexJob || state.indexPending) {
      $("preview-status").classList.remove("inline-error");
      $("preview-status").textContent = "The preview comes once the photos are indexed.";
      return;
    }
    // In print mode the tile size (so the index's) is planned by the server: the preview says.
    const key = indexKey(state.tiles);
    if (state.size.mode !== "print" && !state.indexed.has(key) && !state.indexFailed.has(key)) {
      indexTiles(state.tiles).catch(settingsIndexFailed);
      return;
    }
    const controller = new AbortController();
    state.previewAbort = controller;
    $("preview-busy").hidden = false;
    $("preview-status").classList.remove("inline-error");
    $("preview-status").textContent = "Updating the preview…";
    const started = performance.now();
    const body = {target: state.target.id, tiles: state.tiles, settings: settingsPayload()};
    try {
      const response = await api("POST", "/api/preview", body, {signal: controller.signal, raw: true});
      const blob = await response.blob();
      if (controller.signal.aborted) return;
      const cells = Number(response.headers.get("X-Mosaicist-Cells"));
      const seconds = Number(response.headers.get("X-Mosaicist-Seconds"));
      const url = URL.createObjectURL(blob);
      const image = $("preview");
      await new Promise((resolve, reject) => {
        image.onload = resolve;
        image.onerror = () => reject(new ApiError("The preview could not be shown."));
        image.src = url;
      });
      if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
      state.previewUrl = url;
      image.hidden = false;
      // What this picture shows, for anyone (a test, a curious user) asking which settings.
      image.dataset.serial = String(Number(image.dataset.serial || 0) + 1);
      image.dataset.settings = JSON.stringify(body.settings);
      $("preview-empty").hidden = true;
      const took = Number.isFinite(seconds) && seconds > 0 ? seconds : (performance.now() - started) / 1000;
      $("preview-status").textContent = `${Number.isFinite(cells) && cells > 0 ? fmt(cells) + " cells" : "Preview"} · ${took.toFixed(2)} s`;
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) return;
      if (error.status === 409) {
        // The server draws only the newest preview asked for, and that was another tab's
        // (this page aborts its own older ones): asked again, not shown as an error.
        schedulePreview();
        return;
      }
      if (/not indexed/i.test(error.message)
          && state.indexedSettings !== JSON.stringify([body.settings, body.target])) {
        indexTiles(state.tiles).catch(settingsIndexFailed);
        return;
      }
      $("preview-status").classList.add("inline-error");
      $("preview-status").textContent = sentence(error.message);
    } finally {
      if (state.previewAbort === controller) {
        state.previewAbort = null;
        $("preview-busy").hidden = true;
      }
    }
  }

  async function runCommand() {
    state.commandAbort?.abort();
    if (!state.target) {
      $("command").value = "";
      $("command").placeholder = "mosaicist make PICTURE --tiles PHOTOS …";
      $("command-note").hidden = true;
      return;
    }
    const controller = new AbortController();
    state.commandAbort = controller;
    let tiles = state.tiles;
    if (!tiles) { try { tiles = chosenTiles(); } catch (_) { tiles = "cifar10"; } }
    try {
      const {command} = await api("POST", "/api/command",
        {target: state.target.id, tiles, settings: settingsPayload()}, {signal: controller.signal});
      $("command").value = command;
      fitCommand();
      // The command names the picture the studio stored (a digest in its cache), which
      // works as pasted; the person knows it by the name they chose it as.
      $("command-note").textContent = `The picture in it is the copy of ${state.target.name} the studio keeps, so the command works as pasted into a terminal.`;
      $("command-note").hidden = false;
    } catch (error) {
      if (error.name === "AbortError") return;
      $("command").value = "";
      $("command").placeholder = sentence(error.message);
      $("command-note").hidden = true;
    }
  }

  /** The command box grows to show the whole command. */
  function fitCommand() {
    const box = $("command");
    box.style.height = "auto";
    box.style.height = `${box.scrollHeight + 2}px`;
  }

  /** Put `text` on the clipboard, and say so on `button` for a moment. */
  async function copyText(text, button) {
    if (!text) return;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No clipboard API (a page not served from localhost, an old browser): a hidden
      // field's selection is copied instead.
      const field = element("textarea", {readonly: true, "aria-hidden": "true", className: "visually-hidden"});
      field.value = text;
      document.body.append(field);
      field.select();
      document.execCommand("copy");
      field.remove();
    }
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = "Copied";
    clearTimeout(Number(button.dataset.timer || 0));
    button.dataset.timer = String(setTimeout(() => { button.textContent = label; }, 1500));
  }

  function copyCommand() {
    return copyText($("command").value, $("copy-command"));
  }

  // --- a run's command as the person knows it ----------------------------------------------

  /**
   * The words of a command as Python's shlex.join writes them: bare, '…' and "…" parts.
   * Null for a line that does not split (an unclosed quote).
   */
  function shellWords(command) {
    const text = String(command || "");
    const words = [];
    let word = null;
    for (let i = 0; i < text.length; i++) {
      const character = text[i];
      if (character === "'") {
        const end = text.indexOf("'", i + 1);
        if (end < 0) return null;
        word = (word ?? "") + text.slice(i + 1, end);
        i = end;
      } else if (character === '"') {
        let part = "";
        for (i += 1; i < text.length && text[i] !== '"'; i++) {
          if (text[i] === "\\" && i + 1 < text.length && '"\\$`'.includes(text[i + 1])) i += 1;
          part += text[i];
        }
        if (i >= text.length) return null;
        word = (word ?? "") + part;
      } else if (character === "\\") {
        word = (word ?? "") + (text[i + 1] ?? "");
        i += 1;
      } else if (/\s/.test(character)) {
        if (word !== null) words.push(word);
        word = null;
      } else {
        word = (word ?? "") + character;
      }
    }
    if (word !== null) words.push(word);
    return words;
  }

  /** One word quoted as Python's shlex.quote quotes it (JavaScript's \w is ASCII, as its). */
  function shellQuote(word) {
    if (word === "") return "''";
    if (/^[\w@%+=:,./-]+$/.test(word)) return word;
    return `'${word.replace(/'/g, `'"'"'`)}'`;
  }

  /**
   * A run's command line as the person knows it. The studio writes it with the path of
   * the picture it stored (a digest in its cache: ".../targets/343b18….jpg") or of the
   * placements it saved, which works as pasted but names nothing the person chose: shown,
   * the picture is named as it was uploaded ("bear.jpg") and saved placements by their
   * file name. Null for a command the studio does not write.
   */
  function commandAsKnown(run) {
    const words = shellWords(run.command);
    if (!words || words.length < 3 || words[0] !== "mosaicist") return null;
    const fileName = words[2].split(/[\\/]/).pop() || words[2];
    let name;
    if (words[1] === "make") name = run.target_name || fileName;
    else if (words[1] === "render") name = fileName;
    else return null;
    const shown = [...words];
    shown[2] = name.startsWith("-") ? `./${name}` : name;  // not read as a flag
    return {text: shown.map(shellQuote).join(" "), name, kind: words[1]};
  }

  /** The "Made with:" line of the mosaic shown: the command, and what its file names are. */
  function showMadeWith(run) {
    const known = run.command ? commandAsKnown(run) : null;
    $("made-with").hidden = !run.command;
    $("made-with").dataset.command = run.command || "";
    $("result-command").textContent = run.command ? `Made with: ${known ? known.text : run.command}` : "";
    let note = "";
    if (known?.kind === "make") {
      note = `Here \u201c${known.name}\u201d is your picture; the command copied names the copy of it the studio keeps, so it works as pasted into a terminal.`;
    } else if (known?.kind === "render") {
      const of = run.target_name ? ` of ${run.target_name}` : "";
      note = `Here \u201c${known.name}\u201d is where each photo of the mosaic${of} was placed; the command copied names the file the studio keeps, so it works as pasted into a terminal.`;
    }
    $("result-command-note").textContent = note;
    $("result-command-note").hidden = !note;
  }

  // --- Make -------------------------------------------------------------------------------

  async function make() {
    if (!readyToMake() || state.making || state.starting) return;
    clearError();
    // The button is off from the click until the run is followed: a double-click (or a
    // second press while the server answers) must not make the mosaic twice.
    state.starting = true;
    $("make").disabled = true;
    try {
      // The name this page uploaded it as: the stored picture is shared by every upload of
      // the same file, and another tab's upload renames it.
      const {id} = await api("POST", "/api/runs", {target: state.target.id, target_name: state.target.name, tiles: state.tiles, settings: settingsPayload()});
      followRun(id, "Making the mosaic");
    } finally {
      state.starting = false;
      if (!state.making) $("make").disabled = !readyToMake();
    }
    loadHistory();
  }

  function followRun(id, what) {
    state.makeSource?.close();
    state.making = id;
    $("make").disabled = true;
    $("cancel-make").hidden = false;
    $("make-box").hidden = false;
    setProgress($("make-progress"), 0, null);
    $("make-status").textContent = `${what}…`;
    state.cancelling = null;
    $("cancel-make").disabled = false;
    save();
    followEvents(`/api/runs/${encodeURIComponent(id)}`, {
      onSource: (source) => { state.makeSource = source; },
      progress: (event) => {
        setProgress($("make-progress"), event.done, event.total);
        // A cancelled run still sends the progress it made before it stops: the page
        // says it is stopping, not that it goes on.
        if (state.cancelling === id) $("make-status").textContent = "Cancelling…";
        // A run waiting behind another (another tab's, or one made before) is not being
        // made yet: the server's events say "queued" until its own work starts.
        else if ((event.data?.state ?? event.state) === "queued") $("make-status").textContent = "Waiting for the run before it…";
        else $("make-status").textContent = progressText(event, what);
      },
      lost: (text) => { $("make-status").textContent = text; },
      finished: (kind, event) => runFinished(id, kind, event),
    });
  }

  async function runFinished(id, kind, event) {
    if (state.making !== id) return;
    // Focus on Cancel (or on Make, turned off while the run went on) is lost when the
    // button goes: a keyboard user would be sent back to the top of the page. It goes to
    // the mosaic made, or back to Make.
    const focusLost = [$("cancel-make"), $("make"), document.body, null].includes(document.activeElement);
    state.making = null;
    state.makeSource = null;
    state.cancelling = null;
    save();
    $("cancel-make").hidden = true;
    $("cancel-make").disabled = false;
    $("make").disabled = !readyToMake();
    let run = null;
    try { run = await api("GET", `/api/runs/${encodeURIComponent(id)}`); } catch (_) { /* shown below */ }
    if (kind === "done" && run) {
      setProgress($("make-progress"), 1, 1);
      const seconds = run.report?.timings?.total;
      $("make-status").textContent = seconds ? `Done in ${seconds.toFixed(1)} s.` : "Done.";
      showRun(run);
      if (focusLost) $("result-heading").focus({preventScroll: true});
    } else if (kind === "cancelled") {
      $("make-box").hidden = true;
      $("make-status").textContent = "";
    } else if (kind === "interrupted" || run?.status === "interrupted") {
      $("make-box").hidden = true;
      showError("This mosaic was cut off when the studio stopped; make it again.");
    } else {
      $("make-box").hidden = true;
      showError(run?.error || event?.message || "Making the mosaic failed.");
    }
    if (focusLost && kind !== "done") $("make").focus({preventScroll: true});
    loadHistory();
  }

  async function cancelMake() {
    const id = state.making;
    if (!id || state.cancelling === id) return;
    // Off until the run ends (runFinished, or followRun for the next one): pressed
    // again, it would only ask the same again.
    $("cancel-make").disabled = true;
    try {
      await api("POST", `/api/runs/${encodeURIComponent(id)}/cancel`);
    } catch (error) {
      if (state.making === id) $("cancel-make").disabled = false;
      throw error;
    }
    if (state.making !== id) return;  // it ended meanwhile
    state.cancelling = id;
    $("make-status").textContent = "Cancelling…";
  }

  // --- the result --------------------------------------------------------------------------

  function outputKinds(run) {
    const outputs = run.outputs || {};
    return Array.isArray(outputs) ? outputs : Object.keys(outputs);
  }

  function viewerUrl(run) {
    if (run.viewer_url) return run.viewer_url;
    if (run.viewer) return run.viewer;
    const outputs = run.outputs || {};
    const page = !Array.isArray(outputs) && typeof outputs.viewer === "string" ? outputs.viewer : "";
    return `/runs/${encodeURIComponent(run.id)}/view/${page.split("/").map(encodeURIComponent).join("/")}`;
  }

  function showRun(run, {scroll = true} = {}) {
    state.shown = run.id;
    save();
    const section = $("result");
    section.hidden = false;
    const url = viewerUrl(run);
    const frame = $("viewer");
    if (frame.dataset.src !== url) {
      frame.dataset.src = url;
      frame.src = url;
    }
    $("viewer-link").href = url;
    const created = run.created ? new Date(run.created * 1000).toLocaleString() : "";
    $("result-info").textContent = [run.target_name, created].filter(Boolean).join(" · ");
    $("result-figures").replaceChildren(...figures(run).map(([name, value]) =>
      element("div", {}, element("dt", {text: name}), element("dd", {text: value}))));
    const kinds = outputKinds(run);
    $("downloads").replaceChildren(...DOWNLOADS.filter(([kind]) => kinds.includes(kind)).map(([kind, label]) =>
      element("li", {}, element("a", {href: `/api/runs/${encodeURIComponent(run.id)}/files/${kind}`, download: "", "data-kind": kind, text: label}))));
    showMadeWith(run);
    for (const card of document.querySelectorAll(".run")) card.classList.toggle("current", card.dataset.id === run.id);
    if (scroll) section.scrollIntoView({behavior: matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth", block: "start"});
  }

  function figures(run) {
    const report = run.report || {};
    const list = [];
    const grid = report.grid;
    if (grid?.cols && grid?.rows) list.push(["Cells", `${fmt(grid.cols)} × ${fmt(grid.rows)}`]);
    const settings = report.settings || run.settings || {};
    if (grid?.cols && settings.tile_px) {
      const height = heightFor(settings.tile_px, settings.aspect);
      list.push(["Pixels", `${fmt(grid.cols * settings.tile_px)} × ${fmt(grid.rows * height)}`]);
    }
    const metrics = report.metrics || {};
    const distinct = metrics.distinct_tiles ?? report.distinct_tiles;
    if (distinct !== undefined) list.push(["Different photos", fmt(distinct)]);
    if (report.tiles !== undefined) list.push(["Photos in the library", fmt(report.tiles)]);
    if (metrics.ssim_view !== undefined) list.push(["Likeness (SSIM)", Number(metrics.ssim_view).toFixed(2)]);
    if (metrics.ciede2000_mean_view !== undefined) list.push(["Colour error (ΔE)", Number(metrics.ciede2000_mean_view).toFixed(1)]);
    if (report.timings?.total !== undefined) list.push(["Time", `${Number(report.timings.total).toFixed(1)} s`]);
    return list;
  }

  // --- history -----------------------------------------------------------------------------

  const STATUS_TEXT = {queued: "Waiting", running: "Making…", done: "Done", failed: "Failed",
                       cancelled: "Cancelled", interrupted: "Cut off by a restart"};

  /** What a run card says of a setting's value: "no limit", "Oklab", "3 cells". */
  function valueWords(setting, value) {
    if (value === null || value === undefined) return setting.noneLabel.toLowerCase();
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (setting.choices) return choiceLabel(setting, String(value)).replace(/\s*\(.*\)$/, "");
    if (typeof value !== "number") return String(value);
    const unit = value === 1 && /[^s]s$/.test(setting.unit) ? setting.unit.slice(0, -1) : setting.unit;
    return unit ? `${fmt(value)} ${unit}` : fmt(value);
  }

  /**
   * The style of a run and its settings that differ from the style's, in a short line:
   * "Style: Balanced; colour matching: Oklab; most uses of one photo: no limit".
   * Empty when the run's settings do not say its style.
   */
  function settingsLine(settings) {
    if (!settings || typeof settings !== "object" || typeof settings.preset !== "string") return "";
    const preset = state.presets.get(settings.preset);
    const style = state.declared.get("preset");
    const styleName = style ? choiceLabel(style, settings.preset) : settings.preset;
    const parts = [`Style: ${preset?.label || styleName}`];
    for (const [name, setting] of state.declared) {
      if (CARD_SKIPPED.includes(name) || !Object.prototype.hasOwnProperty.call(settings, name)) continue;
      const value = settings[name];
      let expected = preset && Object.prototype.hasOwnProperty.call(preset.settings, name)
        ? preset.settings[name] : setting.default;
      // The values a setting takes by itself when not given (see mosaicist.options).
      if (name === "match_px" && expected === null) expected = automaticMatchPx(settings.tile_px);
      if (name === "dpi" && expected === null && settings.print_size) expected = 300;
      if (value === expected || (value ?? null) === (expected ?? null)) continue;
      const label = setting.label.length > 1 && /[a-z]/.test(setting.label[1])
        ? setting.label[0].toLowerCase() + setting.label.slice(1) : setting.label;
      parts.push(`${label}: ${valueWords(setting, value)}`);
    }
    return parts.join("; ");
  }

  async function loadHistory() {
    let runs;
    try {
      runs = await api("GET", "/api/runs");
    } catch (error) {
      $("history-info").textContent = sentence(error.message);
      return;
    }
    runs = Array.isArray(runs) ? runs : runs.runs || [];
    $("history-info").textContent = runs.length ? `${fmt(runs.length)} ${runs.length === 1 ? "mosaic" : "mosaics"}, newest first.` : "";
    const list = $("runs");
    if (runs.length === 0) {
      list.replaceChildren(element("li", {className: "empty", text: "Mosaics you make are kept here."}));
      return;
    }
    list.replaceChildren(...runs.map(runCard));
    return runs;
  }

  function runCard(run) {
    const card = $("run-template").content.firstElementChild.cloneNode(true);
    card.dataset.id = run.id;
    card.classList.toggle("current", run.id === state.shown);
    const title = run.target_name || "Mosaic";
    const image = card.querySelector("img");
    const thumbnail = run.thumbnail || run.thumbnail_url
      || (outputKinds(run).includes("thumbnail") ? `/api/runs/${encodeURIComponent(run.id)}/files/thumbnail` : null);
    if (thumbnail && run.status === "done") image.src = thumbnail;
    else image.remove();
    const created = run.created ? new Date(run.created * 1000).toLocaleString() : "";
    card.querySelector(".run-title").textContent = title;
    card.querySelector(".run-title").title = title;
    const grid = run.report?.grid;
    const meta = card.querySelector(".run-meta");
    const tiles = String(run.tiles || "").replace(/[\\/]+$/, "").split(/[\\/]/).pop();
    meta.textContent = [created, tiles, grid ? `${grid.cols} × ${grid.rows} cells` : ""].filter(Boolean).join(" · ");
    meta.title = `Tiles: ${run.tiles}`;
    // Two runs a setting apart looked the same here (name, date, photos, cells): the
    // settings that differ from the run's preset say which is which.
    const differing = settingsLine(run.settings || run.report?.settings);
    const line = card.querySelector(".run-settings");
    line.textContent = differing;
    line.hidden = !differing;
    const status = card.querySelector(".run-status");
    status.textContent = run.status === "failed" && run.error ? `Failed: ${run.error}` : (STATUS_TEXT[run.status] || run.status);
    status.classList.add(run.status);
    const done = run.status === "done";
    const active = run.status === "queued" || run.status === "running";
    const open = () => {
      if (done) showRun(run);
      else if (active && state.making !== run.id) followRun(run.id, "Making the mosaic");
    };
    for (const button of card.querySelectorAll(".run-open, .run-open-text")) {
      button.setAttribute("aria-label", `Open ${title}${created ? ", made " + created : ""}`);
      button.disabled = !done && !active;
      button.addEventListener("click", open);
    }
    const render = card.querySelector(".run-render");
    const tilePx = render.querySelector("input");
    tilePx.value = Math.min(1024, 2 * (run.settings?.tile_px || run.report?.settings?.tile_px || 32));
    render.hidden = !done;
    const renderButton = render.querySelector("button");
    render.addEventListener("submit", guarded(async (event) => {
      event.preventDefault();
      if (renderButton.disabled) return;  // a double-click draws it again once
      const size = Number(tilePx.value);
      if (!Number.isInteger(size) || size < 1 || size > 1024) throw new ApiError("The tile size must be a whole number of pixels from 1 to 1024.");
      clearError();
      renderButton.disabled = true;
      let id;
      try {
        ({id} = await api("POST", `/api/runs/${encodeURIComponent(run.id)}/render`, {tile_px: size}));
      } finally {
        renderButton.disabled = false;
      }
      followRun(id, `Drawing again at ${size} px tiles`);
      $("make-pane").scrollIntoView({block: "start"});
      loadHistory();
    }));
    const remove = card.querySelector(".run-delete");
    remove.setAttribute("aria-label", `Delete ${title}`);
    remove.hidden = active;
    let armed = 0, deleting = false;
    remove.addEventListener("click", guarded(async (event) => {
      if (deleting) return;
      if (!armed) {
        // Ask once more on the button itself: no modal, keyboard friendly.
        remove.textContent = "Delete for good?";
        remove.classList.add("confirm");
        armed = setTimeout(() => { armed = 0; remove.textContent = "Delete"; remove.classList.remove("confirm"); }, 4000);
        return;
      }
      // The second click of a double-click (its click count 2) is no answer to the
      // question the first one raised.
      if (event.detail > 1) return;
      clearTimeout(armed);
      deleting = true;
      try {
        await api("DELETE", `/api/runs/${encodeURIComponent(run.id)}`);
      } finally {
        deleting = false;
      }
      if (state.shown === run.id) {
        state.shown = null;
        save();
        $("result").hidden = true;
        $("viewer").removeAttribute("src");
        delete $("viewer").dataset.src;
      }
      await loadHistory();
    }));
    return card;
  }

  // --- start ---------------------------------------------------------------------------

  function restoreChoices(saved) {
    if (!saved) return;
    if (saved.folder) $("folder-path").value = saved.folder;
    if (saved.array) $("array-path").value = saved.array;
    if (saved.builtin && [...$("builtin").options].some((option) => option.value === saved.builtin)) $("builtin").value = saved.builtin;
    const radio = document.querySelector(`input[name="tiles-kind"][value="${saved.tilesKind}"]`);
    if (radio) radio.checked = true;
    if (saved.changed && typeof saved.changed === "object") {
      for (const [name, value] of Object.entries(saved.changed)) if (state.declared.has(name)) state.changed[name] = value;
    }
    if (saved.size && typeof saved.size === "object") Object.assign(state.size, saved.size);
  }

  /**
   * The mosaic shown before a reload, shown again (where the page was left: no scrolling):
   * the run that was being made when it has finished meanwhile, else the one shown then.
   */
  function restoreShown(saved, runs) {
    if (state.shown) return;  // one opened meanwhile wins
    const byId = new Map(runs.map((run) => [run.id, run]));
    for (const id of [saved?.making, saved?.shown]) {
      const run = typeof id === "string" ? byId.get(id) : undefined;
      if (run?.status === "done") { showRun(run, {scroll: false}); return; }
    }
  }

  async function start() {
    $("error-close").addEventListener("click", clearError);
    try {
      state.server = await api("GET", "/api/state");
    } catch (error) {
      showError(error);
      return;
    }
    $("version").textContent = state.server.version || "";
    const sources = state.server.sources || [];
    $("builtin").replaceChildren(...sources.map((name) => element("option", {value: name, text: SOURCE_LABELS[name] || name})));
    if (sources.length === 0) $("tiles-kind-builtin").closest(".choice").hidden = true;
    buildSettings();
    buildExamples();
    bindTarget();
    bindSize();
    bindFolders();
    const saved = restore();
    restoreChoices(saved);
    showSizeControls();
    refreshControls();
    showTilesKind();
    for (const radio of document.querySelectorAll('input[name="tiles-kind"]')) {
      radio.addEventListener("change", () => { showTilesKind(); save(); });
    }
    for (const id of ["folder-path", "array-path", "builtin"]) $(id).addEventListener("change", save);
    $("folder-path").addEventListener("keydown", (event) => { if (event.key === "Enter") guarded(useTiles)(); });
    $("array-path").addEventListener("keydown", (event) => { if (event.key === "Enter") guarded(useTiles)(); });
    $("use-tiles").addEventListener("click", guarded(() => useTiles()));
    $("cancel-index").addEventListener("click", guarded(async () => {
      if (state.indexJob) await api("POST", `/api/jobs/${encodeURIComponent(state.indexJob)}/cancel`);
    }));
    $("reset-settings").addEventListener("click", () => {
      state.changed = "preset" in state.changed ? {preset: state.changed.preset} : {};
      state.size.across = null;
      refreshControls();
      renderPresetHint();
      settingsChanged();
    });
    $("settings").addEventListener("submit", (event) => event.preventDefault());
    $("copy-command").addEventListener("click", guarded(copyCommand));
    $("copy-result-command").addEventListener("click", guarded(
      () => copyText($("made-with").dataset.command, $("copy-result-command"))));
    $("make").addEventListener("click", guarded(make));
    $("cancel-make").addEventListener("click", guarded(cancelMake));
    // The picture too: a reload (or going back to the page) mid-make must not lose it.
    await restoreTarget(saved);
    schedulePreview();
    const runs = await loadHistory();
    const active = (runs || []).find((run) => run.status === "queued" || run.status === "running");
    if (active) followRun(active.id, "Making the mosaic");
    restoreShown(saved, runs || []);
    // The photos chosen last time are indexed again (a no-op when the index is current).
    if (saved?.tiles) guarded(() => useTiles({quiet: true}))();
  }

  start();
})();

// cardamage page: upload photos to /v1/predict and show each result; photos added together are
// one claim (several photos of one car), sent to /v1/claims and shown in one claim card with each
// photo's card inside it. Plain JavaScript, no build, no CDN. Text from the server or from file names is only ever set as textContent (never HTML).
"use strict";

(() => {
  const KEY_STORAGE = "cardamage.apiKey";
  const MB = 1024 * 1024;
  const MAX_ATTEMPTS = 4; // a busy server (503) is retried after its Retry-After
  const NO_DAMAGE = "whole"; // the severity label of an undamaged car
  const TONES = { whole: "tone-ok", minor: "tone-ok", moderate: "tone-warn", severe: "tone-bad" };
  const DEFAULT_LIMITS = { max_files: 16, max_upload_mb: 20, formats: ["jpeg", "png", "webp", "bmp", "gif"] };

  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    limits: DEFAULT_LIMITS,
    urls: [],
    cards: [], // {file, card} of every photo sent, so heatmaps can be fetched for them later
    display: {}, // task -> label -> the label as a person reads it (from /v1/model)
    claims: 0, // claims shown so far: names the next one
    opened: new Date().toISOString().slice(0, 19).replace("T", " "), // tells page loads apart
  };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const pct = (score) => `${Math.round(score * 100)}%`;
  const title = (name) => name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  // a label as a person reads it ("whole" is "No damage"); the API keeps the label itself
  const shown = (task, label) => title((state.display[task] || {})[label] || label);
  const chosenLabels = (p) => (p.kind === "multiclass" ? [p.label] : p.labels);
  // "No damage 81%", "Dent 64%, Paint 55%", or "" when a multilabel task found nothing
  const describe = (task, p) =>
    chosenLabels(p).map((label) => `${shown(task, label)} ${pct(p.scores[label])}`).join(", ");

  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    if (state.key) headers.set("X-API-Key", state.key);
    const response = await fetch(path, { ...options, headers });
    const body = await response.json().catch(() => null);
    return { response, body };
  }

  // ---- server status and model information -------------------------------------------------

  function setStatus(kind, text) {
    const status = $("status");
    status.className = `status status--${kind}`;
    status.textContent = text;
  }

  function showNotice(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = !text;
  }

  async function watchHealth() {
    try {
      const { response, body } = await api("/v1/health/ready");
      if (response.ok) {
        setStatus("ready", "Model ready");
        loadModel();
        return;
      }
      if (body && body.error && body.error.code === "model_failed") {
        setStatus("down", "Model unavailable");
        showNotice(body.error.message);
        return;
      }
      setStatus("wait", "Loading model…");
    } catch (_) {
      setStatus("down", "Server unreachable");
    }
    setTimeout(watchHealth, 2000);
  }

  async function loadModel() {
    const { response, body } = await api("/v1/model");
    if (response.status === 401) {
      askForKey();
      return;
    }
    if (!response.ok || !body) return;
    state.limits = body.limits;
    state.display = Object.fromEntries(body.tasks.map((t) => [t.name, t.display_names || {}]));
    const formats = body.limits.formats.map((f) => f.toUpperCase()).join(", ");
    $("limits").textContent =
      `${formats} · up to ${body.limits.max_upload_mb} MB each · ${body.limits.max_files} per upload`;
    const tasks = body.tasks.map((t) => title(t.name)).join(", ");
    $("model-info").textContent =
      `Model ${body.model.id} · version ${body.model.version} · ${tasks}`;
    const explain = $("explain");
    explain.disabled = !body.explain;
    if (!body.explain) {
      explain.checked = false;
      $("explain-label").textContent = "Heatmaps are not available on this server";
    }
  }

  function askForKey() {
    $("keyform").hidden = false;
    $("apikey").focus();
  }

  function saveKey(event) {
    event.preventDefault();
    state.key = $("apikey").value.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("keyform").hidden = true;
    showNotice("");
    loadModel();
  }

  // ---- uploads -------------------------------------------------------------------------------

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    showNotice("");
    $("clear").hidden = false;
    const limits = state.limits;
    const claim = files.length > 1 ? createClaim(files.length) : null;
    if (claim) reveal(claim.node);
    const accepted = [];
    for (const file of files) {
      const card = createCard(file, claim ? claim.photos : $("results"));
      if (!claim && file === files[0]) reveal(card.node);
      state.cards.push({ file, card });
      if (file.size > limits.max_upload_mb * MB) {
        const size = (file.size / MB).toFixed(1);
        card.reject(`Too large: ${size} MB, the limit is ${limits.max_upload_mb} MB per photo.`);
      } else {
        accepted.push({ file, card });
      }
    }
    if (claim && !accepted.length) {
      claim.reject("None of its photos can be sent.");
    } else if (claim && accepted.length > limits.max_files) {
      claim.reject(`A claim holds at most ${limits.max_files} photos: each is assessed alone.`);
    } else if (claim) {
      send(accepted, 1, claim);
      return;
    }
    for (let i = 0; i < accepted.length; i += limits.max_files) {
      send(accepted.slice(i, i + limits.max_files), 1, null);
    }
  }

  // New results go below the older ones, often below the fold: scroll them into view.
  function reveal(node) {
    const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    node.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
  }

  // A claim's photos go to /v1/claims (its answer has each photo's prediction too).
  function post(items, explain, claim = null) {
    const form = new FormData();
    for (const { file } of items) form.append("files", file, file.name);
    if (claim) {
      form.append("claim", `${claim.id} · ${state.opened}`); // unique across page loads
      return api("/v1/claims", { method: "POST", body: form });
    }
    return api(`/v1/predict${explain ? "?explain=true" : ""}`, { method: "POST", body: form });
  }

  async function send(items, attempt, claim) {
    let result;
    try {
      result = await post(items, $("explain").checked, claim);
    } catch (_) {
      items.forEach((item) => item.card.reject("The server could not be reached. Try again."));
      if (claim) claim.reject("The server could not be reached. Try again.");
      return;
    }
    const { response, body } = result;
    if (response.ok && body) {
      if (claim) claim.show(body.claim);
      body.results.forEach((r, i) => items[i].card.show(r));
      return;
    }
    const error = (body && body.error) || { message: `The server answered ${response.status}.` };
    if (response.status === 503 && attempt < MAX_ATTEMPTS) {
      const wait = Number(response.headers.get("Retry-After")) || 1;
      items.forEach((item) => item.card.pending(`Server busy, retrying in ${wait} s…`));
      setTimeout(() => send(items, attempt + 1, claim), wait * 1000);
      return;
    }
    if (response.status === 401) askForKey();
    if (claim) claim.reject(error.message);
    if (error.files) {
      error.files.forEach((f, i) => items[i].card.reject(f.error.message));
    } else {
      // a claim's error is said once, on the claim
      const message = claim ? "Not assessed: see the claim above." : error.message;
      items.forEach((item) => item.card.reject(message));
    }
  }

  // The switch turned on after photos were shown: fetch the maps those photos lack.
  function explainToggled() {
    const on = $("explain").checked;
    $("results").classList.toggle("results--plain", !on);
    if (!on) return;
    const todo = state.cards.filter(({ card }) => card.needsHeatmaps());
    for (let i = 0; i < todo.length; i += state.limits.max_files) {
      fetchHeatmaps(todo.slice(i, i + state.limits.max_files));
    }
  }

  async function fetchHeatmaps(items) {
    items.forEach(({ card }) => card.drawing("Drawing heatmaps…"));
    let result = null;
    try {
      result = await post(items, true);
    } catch (_) {
      // answered below, like any other failure
    }
    if (result && result.response.ok && result.body) {
      result.body.results.forEach((r, i) => items[i].card.heatmaps(r.explanation || {}));
      return;
    }
    const error = result && result.body && result.body.error;
    const reason = error ? error.message : "the server could not be reached";
    items.forEach(({ card }) => card.drawing(`Heatmaps could not be drawn: ${reason}`));
  }

  // ---- result cards --------------------------------------------------------------------------

  // ---- claim cards: one car from several photos -------------------------------------------

  function createClaim(count) {
    state.claims += 1;
    const id = `Claim ${state.claims}`;
    const box = el("section", "claim");
    const summary = el("div", "claim__summary");
    summary.append(el("h2", "claim__title", `${id} · ${count} photos of one car`));
    let slot = el("p", "card__pending", "Assessing the car from all its photos…");
    summary.append(slot);
    const photos = el("div", "claim__photos");
    box.append(summary, photos);
    $("results").append(box);
    const replace = (node) => {
      slot.replaceWith(node);
      slot = node;
    };
    return {
      id,
      node: box,
      photos,
      reject(message) {
        box.classList.add("claim--error");
        replace(errorBox(message, "Claim not assessed"));
      },
      show(claim) {
        if (!claim.assessment) {
          // no photo usable: said once here; each photo's card says its own reason
          box.classList.add("claim--declined");
          const note = el("div", "card__abstain");
          note.setAttribute("role", "status");
          note.append(el("strong", "", "Claim not assessed: a person should look at its photos"), el("p", "", claim.reason));
          replace(note);
          return;
        }
        replace(renderClaim(claim));
      },
    };
  }

  // The car's severity, then per multilabel task what any photo found, with which photos saw it.
  function renderClaim(claim) {
    const wrap = el("div", "claim__result");
    const reused = seenBefore(claim.seen_before);
    if (reused) wrap.append(reused);
    if (claim.needs_review) wrap.append(reviewBox(claim));
    const entries = Object.entries(claim.assessment);
    for (const [name, p] of entries.filter(([, t]) => t.kind === "multiclass")) {
      // one number per decision: the probability the car is at least that damaged
      wrap.append(headline(name, p.label, p.confidence, claim.partial));
    }
    for (const [name, p] of entries.filter(([, t]) => t.kind === "multilabel")) {
      const block = el("section", "task");
      const heading = el("h3", "", title(name));
      heading.append(el("span", "", p.labels.length ? "" : "none detected"));
      block.append(heading);
      const list = el("ul", "evidence");
      for (const label of p.labels) {
        const seen = p.evidence[label].map((e) => `${e.photo} ${pct(e.score)}`).join(", ");
        const item = el("li");
        item.append(el("strong", "", `${shown(name, label)} ${pct(p.scores[label])}`), el("span", "", ` seen in ${seen}`));
        list.append(item);
      }
      block.append(list);
      wrap.append(block);
    }
    wrap.append(el("p", "claim__photos-used", `Photos, most telling first: ${claim.photos.join(", ")}`));
    if (claim.left_out.length) {
      const left = claim.left_out.map((x) => `${x.photo} (${x.reason})`).join("; ");
      wrap.append(el("p", "claim__left-out", `Left out: ${left}`));
    }
    return wrap;
  }

  // ---- photos found in other claims (the server's photo index), at the top of the claim card --

  function seenBefore(seen) {
    if (!seen || !(seen.message || seen.warning)) return null;
    if (seen.message) return el("p", "claim__seen-before", `⚠ ${capital(seen.message)}`);
    return el("p", "claim__seen-warning", `Not checked for photos of other claims: ${seen.warning}`);
  }

  function capital(text) {
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function createCard(file, parent) {
    const card = el("article", "card");
    const media = el("div", "media");
    const photo = el("img", "media__photo");
    const url = URL.createObjectURL(file);
    state.urls.push(url);
    photo.alt = file.name;
    photo.src = url;
    photo.addEventListener("load", () => {
      const ratio = Math.min(Math.max(photo.naturalWidth / photo.naturalHeight, 0.75), 1.8);
      media.style.aspectRatio = String(ratio);
    });
    photo.addEventListener("error", () => {
      photo.remove();
      media.classList.add("media--none");
      media.append(el("div", "media__placeholder", "No preview"));
    });
    const spinner = el("div", "spinner");
    media.append(photo, spinner);

    const body = el("div", "card__body");
    const name = el("h2", "card__name", file.name);
    name.title = file.name;
    let slot = el("p", "card__pending", "Analysing…");
    body.append(name, slot);
    card.append(media, body);
    parent.append(card);

    const replace = (node) => {
      spinner.remove();
      slot.replaceWith(node);
      slot = node;
    };
    let prediction = null;
    let explained = false;
    let note = null; // "Drawing heatmaps…" while they are fetched after the fact
    return {
      node: card,
      pending(text) {
        slot.textContent = text;
      },
      reject(message) {
        card.classList.add("card--error");
        replace(errorBox(message));
      },
      show(result) {
        if (result.error) {
          this.reject(result.error.message);
          return;
        }
        if (result.trust && result.trust.abstain) {
          // declined: no answer at all (the server sends none), so no heatmaps either
          card.classList.add("card--abstain");
          replace(abstainBox(result.trust));
          return;
        }
        prediction = result.prediction;
        replace(renderPrediction(prediction, result.trust));
        if (result.explanation) this.heatmaps(result.explanation);
        // switched on while this photo was on its way without heatmaps: fetch them now
        else if ($("explain").checked) fetchHeatmaps([{ file, card: this }]);
      },
      needsHeatmaps() {
        return prediction !== null && !explained && note === null;
      },
      drawing(text) {
        if (note === null) {
          note = el("p", "card__pending");
          media.after(note);
        }
        note.textContent = text;
      },
      heatmaps(explanation) {
        if (note !== null) note.remove();
        note = null;
        explained = true;
        addHeatmaps(media, explanation, prediction);
      },
    };
  }

  function errorBox(message, what = "Photo rejected") {
    const box = el("div", "card__error");
    box.setAttribute("role", "alert");
    const text = el("div");
    text.append(el("strong", "", what), el("span", "", message));
    box.append(text);
    return box;
  }

  // A reason as a claims handler reads it, the figures beside it for engineers.
  function reasonItem(message, detail) {
    const item = el("li", "", message);
    if (detail) item.append(el("span", "reason__detail", ` (${detail})`));
    return item;
  }

  // A box of reasons: what a person should do, then each reason with its figures.
  function reasonsBox(className, heading, failed) {
    const box = el("div", className);
    box.setAttribute("role", "status");
    box.append(el("strong", "", heading));
    const reasons = el("ul", "abstain__reasons");
    failed.forEach((x) => reasons.append(reasonItem(x.message, x.detail)));
    box.append(reasons);
    return box;
  }

  function abstainBox(trust) {
    const seen = trust.in_distribution && !trust.in_distribution.passed ? [trust.in_distribution] : [];
    const failed = [...seen, ...Object.values(trust.quality).filter((c) => !c.passed)];
    return reasonsBox("card__abstain", "Not assessed: a person should look at this photo", failed);
  }

  // Answered, but a task's confidence is under its threshold: say which answer to check (a
  // photo's trust report, or a claim: both carry `confidence` per task).
  function reviewBox(trust) {
    const unsure = Object.values(trust.confidence || {}).filter((c) => !c.sure);
    return reasonsBox("card__review", "Needs review", unsure);
  }

  function renderPrediction(prediction, trust) {
    const wrap = el("div", "card__result");
    if (trust && trust.needs_review) wrap.append(reviewBox(trust));
    const entries = Object.entries(prediction);
    const main = entries.find(([, p]) => p.kind === "multiclass");
    if (main) wrap.append(headline(main[0], main[1].label, main[1].score));
    // the headline names its task: that task's bars follow it without a heading of their own
    for (const [name, p] of entries) wrap.append(taskBlock(name, p, !main || main[0] !== name));
    if (entries.some(([, p]) => p.thresholds)) wrap.append(thresholdKey());
    const found = entries.filter(([, p]) => p.kind === "multilabel" && p.labels.length);
    if (main && main[1].label === NO_DAMAGE && found.length) wrap.append(disagreement(main, found));
    return wrap;
  }

  function thresholdKey() {
    const key = el("p", "bars__key");
    key.append(
      el("span", "bars__key-tick"),
      el("span", "", "marks a label's threshold: the label is reported when its score reaches it. Each task is decided on its own."),
    );
    return key;
  }

  // Severity and the multilabel tasks are separate decisions on the same photo: say so when
  // they seem to contradict each other ("No damage 48%" beside "Paint 76%").
  function disagreement([name, p], found) {
    const seen = found.map(([task, q]) => describe(task, q)).join(", ");
    const passed = found.flatMap(([, q]) => q.labels).length > 1 ? "passed their thresholds" : "passed its threshold";
    return el(
      "p",
      "card__note",
      `${shown(name, p.label)} is the likeliest ${title(name).toLowerCase()} (${pct(p.score)}), yet ${seen} ${passed}: the tasks are decided separately and disagree here, so look at the photo.`,
    );
  }

  // The decision and its one confidence number; a claim answered from fewer photos than sent
  // says so here, where the verdict is read.
  function headline(name, label, confidence, partial = null) {
    const box = el("div", `headline ${TONES[label] || ""}`);
    const left = el("div");
    left.append(el("div", "headline__label", title(name)), el("div", "headline__value", shown(name, label)));
    if (partial) left.append(el("div", "headline__partial", partial));
    const right = el("div", "headline__conf");
    right.append(el("div", "headline__pct", pct(confidence)), el("div", "headline__note", "confidence"));
    box.append(left, right);
    return box;
  }

  function taskBlock(name, p, withHeading) {
    const block = el("section", "task");
    const chosen = chosenLabels(p);
    if (withHeading) {
      const heading = el("h3", "", title(name));
      if (p.kind === "multilabel") {
        const found = chosen.map((label) => shown(name, label)).join(", ");
        heading.append(el("span", "", found || "none detected"));
      }
      block.append(heading);
    }
    const bars = el("div", "bars");
    for (const [label, score] of Object.entries(p.scores)) {
      const threshold = p.thresholds ? p.thresholds[label] : undefined;
      bars.append(bar(shown(name, label), score, chosen.includes(label), threshold));
    }
    block.append(bars);
    return block;
  }

  function bar(label, score, on, threshold) {
    const row = el("div", on ? "bar bar--on" : "bar");
    const track = el("div", "bar__track");
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", label);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", String(Math.round(score * 100)));
    const fill = el("div", "bar__fill");
    fill.style.width = pct(score);
    track.append(fill);
    if (threshold !== undefined) {
      const tick = el("div", "bar__tick");
      tick.style.left = pct(threshold);
      tick.title = `threshold ${pct(threshold)}: reported at or above it`;
      track.append(tick);
    }
    row.append(el("span", "bar__name", label), track, el("span", "bar__pct", pct(score)));
    return row;
  }

  // Per task, the photo with where the model looked, a caption (task, label, score) and the
  // colour scale; a multilabel task that found nothing has no map, and says so.
  function addHeatmaps(media, explanation, prediction) {
    const heatmap = el("img", "media__heatmap");
    heatmap.alt = "Heatmap of where the model looked";
    media.append(heatmap);
    const panel = el("div", "heatmaps");
    const views = el("div", "views");
    views.setAttribute("aria-label", "View");
    const caption = el("p", "heatmaps__caption");
    const legend = el("div", "legend");
    legend.append(el("span", "", "Low"), el("span", "legend__ramp"), el("span", "", "High: where the model looked"));
    legend.setAttribute("aria-hidden", "true");
    const buttons = [];
    const select = (task) => {
      heatmap.hidden = caption.hidden = legend.hidden = task === null;
      if (task !== null) {
        heatmap.src = `data:image/png;base64,${explanation[task]}`;
        caption.textContent = `${title(task)} heatmap: ${describe(task, prediction[task])}`;
      }
      buttons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.task === (task || ""))));
    };
    const mapped = Object.keys(explanation);
    for (const task of ["", ...mapped]) {
      const button = el("button", "", task ? `${title(task)} heatmap` : "Photo");
      button.type = "button";
      button.dataset.task = task;
      button.addEventListener("click", () => select(task || null));
      buttons.push(button);
      views.append(button);
    }
    panel.append(views, caption, legend);
    for (const task of Object.keys(prediction).filter((t) => !mapped.includes(t))) {
      panel.append(el("p", "heatmaps__none", `No ${title(task).toLowerCase()} found: nothing to map`));
    }
    media.after(panel);
    select(mapped.length ? mapped[0] : null);
  }

  function clearResults() {
    state.urls.forEach((url) => URL.revokeObjectURL(url));
    state.urls = [];
    $("results").replaceChildren();
    state.cards = [];
    $("clear").hidden = true;
    showNotice("");
  }

  // ---- wiring --------------------------------------------------------------------------------

  function wireDropzone() {
    const zone = $("dropzone");
    const picker = $("picker");
    zone.addEventListener("click", (e) => {
      if (!e.target.closest("label")) picker.click();
    });
    zone.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        picker.click();
      }
    });
    picker.addEventListener("change", () => {
      addFiles(picker.files);
      picker.value = "";
    });
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        zone.classList.add("dropzone--over");
      }),
    );
    ["dragleave", "drop"].forEach((type) =>
      zone.addEventListener(type, () => zone.classList.remove("dropzone--over")),
    );
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      addFiles(e.dataTransfer.files);
    });
    // a photo dropped beside the zone must not make the browser navigate away
    ["dragover", "drop"].forEach((type) => window.addEventListener(type, (e) => e.preventDefault()));
  }

  document.addEventListener("DOMContentLoaded", () => {
    wireDropzone();
    $("keyform").addEventListener("submit", saveKey);
    $("clear").addEventListener("click", clearResults);
    $("explain").addEventListener("change", explainToggled);
    watchHealth();
  });
})();

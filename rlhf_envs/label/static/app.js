// The labelling page: fetch the next pair, show it side by side, post the choice, keep the progress line.
"use strict";

const params = new URLSearchParams(window.location.search);
const token = params.get("token");
const $ = (id) => document.getElementById(id);
const state = { labeler: null, pair: null, busy: false, config: null };
const KEYS = {
  ArrowLeft: "left", ArrowRight: "right", ArrowUp: "tie", t: "tie", ArrowDown: "skip", s: "skip",
};

async function api(path, body) {
  const headers = body === undefined ? {} : { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function say(text, ok = false) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

function media(clip) {
  const element = document.createElement(clip.media_type.startsWith("video/") ? "video" : "img");
  element.src = clip.url;
  if (element.tagName === "VIDEO") {
    Object.assign(element, { autoplay: true, loop: true, muted: true, playsInline: true });
  }
  return element;
}

function show(pair) {
  state.pair = pair;
  $("waiting").hidden = pair !== null;
  document.querySelector(".pair").hidden = pair === null;
  document.querySelectorAll(".choices button[data-choice]").forEach((b) => { b.disabled = pair === null; });
  $("prompt").hidden = !(pair && pair.kind === "text");
  for (const side of ["left", "right"]) {
    const box = $(side);
    box.replaceChildren();
    $(`${side}-side`).classList.remove("chosen");
    if (pair === null) continue;
    if (pair.kind === "text") box.textContent = pair[side];
    else box.append(media(pair.clips[side]));
  }
  if (pair && pair.kind === "text") $("prompt").textContent = pair.prompt;
}

async function refreshProgress() {
  const p = await api(`/api/progress?labeler=${encodeURIComponent(state.labeler)}`);
  let line = `${p.labelled} / ${p.target} labelled · ${p.per_minute} per minute · ${p.pending_pairs} pairs waiting`;
  line += ` · ${state.labeler}: ${p.labeler.labelled} (${p.labeler.per_minute} per minute)`;
  if (p.agreement && p.agreement.rate !== null) {
    line += ` · agreement ${(100 * p.agreement.rate).toFixed(0)}% over ${p.agreement.pairs} pairs`;
  }
  $("progress").textContent = line;
  $("undo").disabled = !p.labeler.can_undo;
}

async function loadNext() {
  const { pair } = await api(`/api/next?labeler=${encodeURIComponent(state.labeler)}`);
  show(pair);
  await refreshProgress();
}

async function choose(choice) {
  if (state.busy || state.pair === null) return;
  state.busy = true;  // one request at a time: a double click or a held key posts once
  try {
    $(`${choice}-side`)?.classList.add("chosen");
    await api("/api/labels", { pair_id: state.pair.pair_id, choice, labeler: state.labeler });
    say(`Saved: ${choice}.`, true);
    await loadNext();
  } catch (error) {
    say(error.message);
  } finally {
    state.busy = false;
  }
}

async function undo() {
  if (state.busy) return;
  state.busy = true;
  try {
    const { undone } = await api("/api/undo", { labeler: state.labeler });
    say(`Undone: ${undone.choice}. Label this pair again.`, true);
    await loadNext();
  } catch (error) {
    say(error.message);
  } finally {
    state.busy = false;
  }
}

function setLabeler(name) {
  state.labeler = name;
  $("labeler").value = name;
  window.localStorage.setItem("rlhf-labeler", name);
}

async function start() {
  state.config = await api("/api/config");
  $("instructions").textContent = state.config.instructions;
  setLabeler(params.get("labeler") || window.localStorage.getItem("rlhf-labeler") || state.config.default_labeler);
  $("labeler").addEventListener("change", () => {
    setLabeler($("labeler").value.trim());
    loadNext().catch((error) => say(error.message));
  });
  document.querySelectorAll(".choices button[data-choice]").forEach((button) => {
    button.addEventListener("click", () => choose(button.dataset.choice));
  });
  $("undo").addEventListener("click", undo);
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (KEYS[event.key]) {
      event.preventDefault();
      choose(KEYS[event.key]);
    } else if (event.key === "u") {
      undo();
    }
  });
  await loadNext();
  // While no pair waits, ask again; otherwise keep the rate fresh.
  window.setInterval(() => {
    if (state.busy) return;
    (state.pair === null ? loadNext() : refreshProgress()).catch((error) => say(error.message));
  }, 3000);
}

start().catch((error) => say(error.message));

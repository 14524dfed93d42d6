// Chat page for the lmdeploy-sdk API server: streams answers from /v1/chat/completions
// and keeps the conversation in this browser (localStorage). No external assets.
"use strict";

const STORE_KEY = "lmdeploy-sdk-chat";
const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], controller: null, image: null };

function saveState() {
  const settings = {
    system: $("system").value,
    temperature: $("temperature").value,
    maxTokens: $("max-tokens").value,
    apiKey: $("api-key").value,
  };
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify({ messages: state.messages, settings }));
  } catch (e) {
    // over the browser's storage quota (images are large): the conversation stays in this tab only
  }
}

function loadState() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}");
    state.messages = Array.isArray(saved.messages) ? saved.messages : [];
    const s = saved.settings || {};
    if (s.system !== undefined) $("system").value = s.system;
    if (s.temperature !== undefined) $("temperature").value = s.temperature;
    if (s.maxTokens !== undefined) $("max-tokens").value = s.maxTokens;
    if (s.apiKey !== undefined) $("api-key").value = s.apiKey;
  } catch (e) {
    state.messages = [];
  }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// A message's content: a string, or OpenAI parts (text and image_url) when it carries an image.
function textOf(content) {
  if (typeof content === "string") return content;
  return content.filter((p) => p.type === "text").map((p) => p.text).join("");
}

function imagesOf(content) {
  return typeof content === "string" ? [] : content.filter((p) => p.type === "image_url").map((p) => p.image_url.url);
}

function addBubble(role, content) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  for (const url of imagesOf(content)) {
    const img = document.createElement("img");
    img.src = url;
    img.alt = "attached image";
    img.className = "thumb";
    div.appendChild(img);
  }
  div.appendChild(document.createTextNode(textOf(content)));
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function render() {
  $("messages").replaceChildren();
  for (const m of state.messages) addBubble(m.role, m.content);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").hidden = !busy;
  $("status").textContent = busy ? "generating…" : "";
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    return (body.error && body.error.message) || resp.statusText;
  } catch (e) {
    return resp.status + " " + resp.statusText;
  }
}

async function loadModel() {
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) throw new Error(await errorText(resp));
    const body = await resp.json();
    state.model = body.data[0].id;
    $("model").textContent = "model: " + state.model;
  } catch (e) {
    state.model = null;
    $("model").textContent = "cannot list models: " + e.message;
  }
}

// Yields the JSON payload of each `data:` event of an SSE body until [DONE].
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function requestMessages() {
  const system = $("system").value.trim();
  const msgs = state.messages.map((m) => ({ role: m.role, content: m.content }));
  return system ? [{ role: "system", content: system }, ...msgs] : msgs;
}

async function send(text) {
  if (!state.model) await loadModel();
  if (!state.model) {
    addBubble("error", "No model: is the server running, and is the API key right?");
    return;
  }
  const content = state.image ? [{ type: "image_url", image_url: { url: state.image } }, { type: "text", text }] : text;
  clearImage();
  state.messages.push({ role: "user", content });
  addBubble("user", content);
  saveState();
  const bubble = addBubble("assistant streaming", "");
  let answer = "";
  state.controller = new AbortController();
  setBusy(true);
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: state.controller.signal,
      body: JSON.stringify({
        model: state.model,
        messages: requestMessages(),
        stream: true,
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    for await (const chunk of sseEvents(resp.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        answer += delta.content;
        bubble.textContent = answer;
        bubble.scrollIntoView({ block: "end" });
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") addBubble("error", e.message);
  } finally {
    bubble.classList.remove("streaming");
    if (answer) {
      state.messages.push({ role: "assistant", content: answer });
    } else {
      bubble.remove();
      state.messages.pop(); // keep user/assistant turns paired
    }
    saveState();
    state.controller = null;
    setBusy(false);
  }
}

function clearImage() {
  state.image = null;
  $("image").value = "";
  $("attached").textContent = "";
}

function attachImage() {
  const file = $("image").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.image = reader.result; // a data: URL, as the API takes it
    $("attached").textContent = "image: " + file.name;
  };
  reader.readAsDataURL(file);
}

function init() {
  loadState();
  render();
  loadModel();
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("attach").addEventListener("click", () => $("image").click());
  $("image").addEventListener("change", attachImage);
  $("new-chat").addEventListener("click", () => {
    state.messages = [];
    saveState();
    render();
  });
  $("toggle-settings").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
  });
  for (const id of ["system", "temperature", "max-tokens", "api-key"]) {
    $(id).addEventListener("change", () => {
      saveState();
      if (id === "api-key") loadModel();
    });
  }
}

init();

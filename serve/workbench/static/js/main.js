// Routing between the pages by the URL's hash, and the API key form.
import { apiKey, getJson, releaseMedia, setApiKey } from "./api.js";
import { renderDashboard } from "./dashboard.js";
import { h } from "./dom.js";
import { renderMedia } from "./media.js";
import { renderSearch } from "./search.js";

const view = document.getElementById("view");
const status = document.getElementById("status");
const keyInput = document.getElementById("api-key");
const keyState = document.getElementById("key-state");
const forget = document.getElementById("forget-key");

function say(message, isError = false) {
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function showKeyState() {
  const present = Boolean(apiKey());
  keyState.textContent = present ? "key set" : "no key";
  forget.hidden = !present;
  keyInput.value = "";
}

// Each route renders into a fresh page element: a slower render of a page the user already left
// then fills a detached node instead of overwriting the current page.
let current = null;

async function route() {
  releaseMedia();
  say("");
  const page = h("div", { class: "page" });
  current = page;
  view.replaceChildren(page);
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?", 2);
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (parts[0] || "search"));
  }
  if (!apiKey()) {
    page.append(h("p", { class: "notice" }, "Enter an API key (top right) to use the workbench."));
    return;
  }
  const sayHere = (message, isError) => { if (current === page) say(message, isError); };
  try {
    if (parts[0] === "media" && parts[1]) await renderMedia(page, parts[1], sayHere);
    else if (parts[0] === "dashboard") await renderDashboard(page, params);
    else await renderSearch(page, params, navigate, sayHere);
  } catch (error) {
    sayHere(error.message, true);
  }
}

document.getElementById("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = keyInput.value.trim();
  if (!value) return;
  setApiKey(value);
  try {
    await getJson("/v1/version");
  } catch (error) {
    setApiKey(null);
    showKeyState();
    say(`key refused: ${error.message}`, true);
    return;
  }
  showKeyState();
  route();
});

forget.addEventListener("click", () => {
  setApiKey(null);
  showKeyState();
  route();
});

window.addEventListener("hashchange", route);
showKeyState();
route();

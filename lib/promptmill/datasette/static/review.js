// promptmill review: keyboard and buttons post actions to /-/review/action with the page's session token.
(function () {
  "use strict";
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const token = meta("review-token");
  const base = meta("review-base");
  const db = meta("review-db");
  const status = document.getElementById("status");
  if (window.matchMedia("(max-width: 600px)").matches) {  // a phone: the grid first, the panels a tap away
    document.querySelectorAll("details.panel").forEach((panel) => { panel.open = false; });
  }
  const say = (text) => { if (status) status.textContent = text; };

  async function act(payload) {
    if (!token) { say("read-only: start with promptmill browse --review"); return null; }
    const kind = document.getElementById("kind");
    if (kind && payload.kind === undefined) payload.kind = kind.value;
    const response = await fetch(`${base}/action?db=${encodeURIComponent(db)}`, {
      method: "POST", credentials: "same-origin",
      headers: {"content-type": "application/json", "x-review-token": token},
      body: JSON.stringify(payload),
    });
    const result = await response.json();
    if (!response.ok) { say(`refused: ${result.error}`); return null; }
    say(`action ${result.number}: ${result.name} on ${result.ids.length} item(s), ${result.rows} row(s) written`);
    (result.tiles || []).forEach(redraw);
    document.body.dataset.lastAction = String(result.number);
    return result;
  }

  function redraw(tile) {
    document.querySelectorAll(`.tile[data-id="${tile.id}"]:not([data-item="prompt"])`).forEach((el) => {
      el.className = el.className.replace(/state-\w+/, `state-${tile.state}`);
      el.classList.toggle("reviewed", !!tile.reviewed);
      el.querySelector(".state").textContent = tile.state + (tile.reviewed ? " (review)" : "");
      const caption = el.querySelector(".caption");
      if (caption && tile.caption) { caption.textContent = tile.caption.text; caption.dataset.captionId = tile.caption.caption_id; }
      const tags = el.querySelector(".tags");
      if (tags) {
        tags.replaceChildren(...tile.tags.slice(0, 12).map(([tag, score]) => {
          const li = document.createElement("li");
          li.textContent = tag;
          if (score !== null) { const small = document.createElement("small"); small.textContent = ` ${score.toFixed(2)}`; li.append(small); }
          return li;
        }));
      }
    });
  }

  const reason = () => (document.getElementById("reason") || {}).value || "";
  const tiles = () => Array.from(document.querySelectorAll(".tile"));
  const selected = () => Array.from(document.querySelectorAll(".tile .select:checked")).map((box) => Number(box.value));
  const countSelected = () => {
    const count = document.getElementById("selected-count");
    if (count) count.textContent = `${selected().length} selected`;
  };
  document.addEventListener("change", (event) => { if (event.target.classList.contains("select")) countSelected(); });

  function move(tile, key) {
    const all = tiles();
    const index = all.indexOf(tile);
    if (key === "ArrowLeft") return all[index - 1];
    if (key === "ArrowRight") return all[index + 1];
    const top = tile.getBoundingClientRect();
    const sameRow = all.filter((t) => Math.abs(t.getBoundingClientRect().top - top.top) < 4).length || 1;
    return all[index + (key === "ArrowDown" ? sameRow : -sameRow)];
  }

  function editInline(tile) {
    const caption = tile.querySelector(".caption");
    if (!caption || tile.querySelector("textarea")) return;
    const box = document.createElement("textarea");
    box.value = caption.textContent; box.rows = 3; box.className = "inline-edit";
    box.setAttribute("aria-label", "caption (Enter saves, Escape cancels)");
    caption.hidden = true; caption.after(box); box.focus();
    box.addEventListener("keydown", async (event) => {
      event.stopPropagation();
      if (event.key === "Escape") { box.remove(); caption.hidden = false; tile.focus(); }
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        const result = await act({action: "caption", ids: [Number(tile.dataset.id)], text: box.value});
        if (result) { box.remove(); caption.hidden = false; tile.focus(); }
      }
    });
  }

  document.addEventListener("keydown", async (event) => {
    const target = event.target;
    if (target.matches("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "/") { const search = document.getElementById("search"); if (search) { event.preventDefault(); search.focus(); } return; }
    if (event.key === "u") { event.preventDefault(); await undo("last"); return; }
    const tile = target.closest ? target.closest(".tile") : null;
    if (!tile) {
      const one = document.getElementById("one");
      const step = {ArrowLeft: "previous", ArrowRight: "next"}[event.key];
      if (one && step && document.getElementById(step)) { document.getElementById(step).click(); return; }
      if (!one && event.key.startsWith("Arrow") && tiles().length) { event.preventDefault(); tiles()[0].focus(); }
      if (one && (event.key === "k" || event.key === "d")) {
        await act({action: event.key === "k" ? "keep" : "drop", item_type: "image", ids: [Number(one.dataset.id)], reason: reason()});
        setTimeout(() => location.reload(), 300);
      }
      return;
    }
    const id = Number(tile.dataset.id);
    const item = tile.dataset.item || "image";
    if (event.key === "k" || event.key === "d") {
      event.preventDefault();
      const result = await act({action: event.key === "k" ? "keep" : "drop", item_type: item, ids: [id], reason: reason()});
      if (result && item === "prompt") tile.querySelector(".state").textContent = `${event.key === "k" ? "keep" : "drop"} (review)`;
      const next = move(tile, "ArrowRight");
      if (result && next) next.focus();
    } else if (event.key.startsWith("Arrow")) {
      const next = move(tile, event.key);
      if (next) { event.preventDefault(); next.focus(); }
    } else if (event.key === "x" || event.key === " ") {
      const box = tile.querySelector(".select");
      if (box) { event.preventDefault(); box.checked = !box.checked; countSelected(); }
    } else if (event.key === "e" && item === "image") {
      event.preventDefault(); editInline(tile);
    } else if (event.key === "Enter") {
      const link = tile.querySelector("a.thumb"); if (link) link.click();
    }
  });

  async function undo(which) {
    const result = await act({action: "undo", which});
    if (result && !(result.tiles || []).length) setTimeout(() => location.reload(), 300);
  }
  const on = (id, handler) => { const el = document.getElementById(id); if (el) el.addEventListener("click", handler); };
  on("undo-last", () => undo("last"));
  on("undo-session", () => undo("session"));
  on("select-page", () => { document.querySelectorAll(".tile .select").forEach((box) => { box.checked = true; }); countSelected(); });

  const bulk = document.getElementById("bulk");
  if (bulk) bulk.addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = document.getElementById("bulk-action").value;
    const scope = document.getElementById("bulk-scope").value;
    const words = document.getElementById("bulk-tags").value;
    const payload = {action, item_type: "image", reason: reason()};
    if (scope === "filter") payload.filter = bulk.dataset.filter; else payload.ids = selected();
    if (action === "replace") { payload.old = words; payload.new = document.getElementById("bulk-new").value; }
    else payload.tags = words.split(",");
    const result = await act(payload);
    if (result && scope === "filter") setTimeout(() => location.reload(), 300);
  });

  document.querySelectorAll("[data-verdict]").forEach((button) => button.addEventListener("click", async () => {
    const holder = button.closest("[data-id]");
    const result = await act({action: button.dataset.verdict, item_type: holder.dataset.item || "image",
                              ids: [Number(holder.dataset.id)], reason: reason()});
    if (result) setTimeout(() => location.reload(), 300);
  }));

  document.querySelectorAll("form.edit-caption").forEach((form) => {
    const id = Number(form.closest("[data-id]").dataset.id);
    const kind = form.dataset.kind;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (await act({action: "caption", ids: [id], kind, text: form.querySelector("textarea").value})) location.reload();
    });
    const tagButton = form.querySelector(".tag-apply");
    if (tagButton) tagButton.addEventListener("click", async () => {
      const add = form.querySelector(".add-tag").value.trim();
      const remove = form.querySelector(".remove-tag").value.trim();
      if (add) await act({action: "add_tag", ids: [id], kind, tags: [add]});
      if (remove) await act({action: "remove_tags", ids: [id], kind, tags: remove.split(",")});
      location.reload();
    });
  });
})();

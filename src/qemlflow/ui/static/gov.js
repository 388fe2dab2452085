// Governance pages: poll the audit verification fragment until it is no longer pending.
"use strict";
(function () {
  const DELAY_MS = 1000;
  function poll() {
    const box = document.getElementById("verification");
    if (!box) { return; }
    const pending = box.querySelector("[data-state=pending]");
    if (!pending) {
      // not loaded yet (the shared script fetches it once): look again shortly
      if (box.getAttribute("data-loaded") !== "true") { window.setTimeout(poll, DELAY_MS); }
      return;
    }
    fetch(pending.getAttribute("data-poll") || "/audit/verification", { headers: { "Accept": "text/html" } })
      .then(function (response) { return response.text(); })
      .then(function (text) { box.innerHTML = text; window.setTimeout(poll, DELAY_MS); })
      .catch(function () { window.setTimeout(poll, DELAY_MS * 5); });
  }
  document.addEventListener("DOMContentLoaded", function () { window.setTimeout(poll, DELAY_MS); });
})();

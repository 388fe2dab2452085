// QeMLflow UI: small progressive enhancement; every page works without it.
"use strict";
(function () {
  // Hover tooltips: any element with data-tooltip="text" [data-depict="/depict?smiles=..."].
  let tip = null;
  function hide() { if (tip) { tip.remove(); tip = null; } }
  document.addEventListener("mouseover", function (event) {
    const target = event.target.closest ? event.target.closest("[data-tooltip]") : null;
    if (!target) { return; }
    hide();
    tip = document.createElement("div");
    tip.className = "tooltip";
    tip.textContent = target.getAttribute("data-tooltip");
    const img = target.getAttribute("data-depict");
    if (img) {
      const picture = document.createElement("img");
      picture.src = img; picture.width = 180; picture.height = 120; picture.alt = "";
      tip.insertBefore(document.createElement("br"), tip.firstChild);
      tip.insertBefore(picture, tip.firstChild);
    }
    tip.style.left = (event.clientX + 12) + "px";
    tip.style.top = (event.clientY + 12) + "px";
    document.body.appendChild(tip);
  });
  document.addEventListener("mouseout", function (event) {
    if (event.target.closest && event.target.closest("[data-tooltip]")) { hide(); }
  });
  // Fragments that load after the page: <div data-load="/audit/verification">.
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-load]").forEach(function (box) {
      fetch(box.getAttribute("data-load"), { headers: { "Accept": "text/html" } })
        .then(function (response) { return response.text(); })
        .then(function (text) { box.innerHTML = text; box.setAttribute("data-loaded", "true"); })
        .catch(function () { box.textContent = "could not load"; box.setAttribute("data-loaded", "error"); });
    });
  });
})();

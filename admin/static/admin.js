/* litegate admin: confirm dialogs, copy buttons, dashboard refresh. No dependencies. */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    if (!field) return;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    };
    field.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {
        document.execCommand("copy");
        done();
      });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  // "Add variant" on the route form: clone the last row with the next index. Without
  // JavaScript the same button posts the form back with one more row (nothing saved).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-add-variant]");
    if (!button) return;
    var form = button.form;
    var body = form && form.querySelector("table.variants tbody");
    var counter = form && form.querySelector("input[name=variant_rows]");
    if (!body || !counter || !body.lastElementChild) return;
    var index = body.children.length;
    if (index >= parseInt(button.getAttribute("data-max-rows") || "100", 10)) return;
    event.preventDefault();
    var row = body.lastElementChild.cloneNode(true);
    row.setAttribute("data-row", String(index));
    row.querySelectorAll(".field-error").forEach(function (el) { el.remove(); });
    row.querySelectorAll("input, select").forEach(function (field) {
      field.name = field.name.replace(/^variants-\d+-/, "variants-" + index + "-");
      field.removeAttribute("aria-invalid");
      field.classList.remove("invalid");
      if (field.type === "checkbox") field.checked = false;
      else if (field.tagName === "SELECT") field.selectedIndex = 0;
      else field.value = "";
    });
    body.appendChild(row);
    counter.value = String(index + 1);
    row.querySelector("input").focus();
  });

  function refresh(panel) {
    var url = panel.getAttribute("data-refresh");
    var seconds = parseFloat(panel.getAttribute("data-refresh-seconds") || "5");
    var tick = function () {
      if (document.hidden) { setTimeout(tick, seconds * 1000); return; }
      fetch(url, { headers: { "X-Litegate-Partial": "1" }, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) {
            var login = response.headers.get("HX-Redirect");
            if (login) window.location.assign(login);
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            panel.innerHTML = html;
            panel.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () {})
        .then(function () { setTimeout(tick, seconds * 1000); });
    };
    setTimeout(tick, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });
})();

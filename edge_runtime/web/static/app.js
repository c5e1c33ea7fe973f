// Progressive enhancement only: every page works without this script (no inline script; CSP 'self').
(function () {
  "use strict";
  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }
  ready(function () {
    // the heatmap's opacity, set by the operator (CSSOM changes are allowed by the CSP; no inline style)
    var sliders = document.querySelectorAll("input.opacity");
    for (var i = 0; i < sliders.length; i++) {
      (function (slider) {
        var target = document.getElementById(slider.getAttribute("data-target"));
        function apply() { if (target) { target.style.opacity = String(Number(slider.value) / 100); } }
        slider.addEventListener("input", apply);
        apply();
      })(sliders[i]);
    }
  });
  ready(function () {
    var form = document.getElementById("upload-form");
    if (!form) { return; }
    var zone = document.getElementById("drop-zone");
    var input = document.getElementById("files");
    var chosen = document.getElementById("chosen");
    var submit = document.getElementById("submit");
    function show() {
      var names = [];
      for (var i = 0; i < input.files.length; i++) { names.push(input.files[i].name); }
      chosen.textContent = names.join(", ");
    }
    input.addEventListener("change", show);
    ["dragenter", "dragover"].forEach(function (ev) {
      zone.addEventListener(ev, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "dragend"].forEach(function (ev) {
      zone.addEventListener(ev, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        show();
        check();
      }
    });
    // Dropping a file anywhere else must not make the browser leave the page.
    ["dragover", "drop"].forEach(function (ev) {
      window.addEventListener(ev, function (e) { if (!zone.contains(e.target)) { e.preventDefault(); } });
    });
    var label = submit.textContent;
    window.addEventListener("pageshow", function () { submit.disabled = false; submit.textContent = label; });
    // The limits the server keeps (data-* on the form): a choice that breaks one is not sent, and the reason is
    // said here in the page's language (the HTTP server cuts an oversized request with a bare 413).
    function mb(bytes) {  // rounded up: a file over the limit never reads as the limit itself (40.04 MB: "40.1")
      return (Math.ceil(bytes / 1e5) / 10).toFixed(1).replace(".", form.getAttribute("data-decimal") || "."); }
    function problem() {
      var files = input.files, total = 0, maxFile = Number(form.getAttribute("data-max-file-bytes"));
      if (files.length > Number(form.getAttribute("data-max-files"))) {
        return form.getAttribute("data-msg-files").replace("%N%", String(files.length));
      }
      for (var i = 0; i < files.length; i++) {
        total += files[i].size;
        if (maxFile && files[i].size > maxFile) {
          return form.getAttribute("data-msg-file").replace("%NAME%", files[i].name).replace("%SIZE%", mb(files[i].size));
        }
      }
      if (total > Number(form.getAttribute("data-max-total-bytes"))) {
        return form.getAttribute("data-msg-total").replace("%SIZE%", mb(total));
      }
      return "";
    }
    var said = document.createElement("p");
    said.className = "error";
    said.id = "choice-error";
    said.setAttribute("role", "alert");
    said.hidden = true;
    form.parentNode.insertBefore(said, form);
    function check() {
      var text = problem();
      said.textContent = text;
      said.hidden = !text;
      return !text;
    }
    input.addEventListener("change", check);
    form.addEventListener("submit", function (e) {
      if (!check()) { e.preventDefault(); return; }
      submit.disabled = true;
      submit.textContent = submit.getAttribute("data-busy") || submit.textContent;
    });
  });
})();

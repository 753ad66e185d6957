// spooler dashboard: shows times in the browser's zone (UTC on hover) and refreshes the page's
// content every few seconds, pausing while the tab is hidden or while a form field has focus.
// Everything works without it.
(function () {
  "use strict";
  var KEY = "spooler.refresh";
  function localTimes(root) {
    var nodes = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      var t = nodes[i], d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); }
    }
  }
  function busy() {
    var a = document.activeElement;
    return document.hidden || (a && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(a.tagName) && a.id !== "refresh");
  }
  var timer = null;
  function schedule() {
    clearTimeout(timer);
    var select = document.getElementById("refresh");
    var seconds = select ? Number(select.value) : 0;
    if (seconds >= 1 && !document.hidden) { timer = setTimeout(refresh, seconds * 1000); }
  }
  function refresh() {
    if (busy()) { schedule(); return; }
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live"), live = document.getElementById("live");
        if (fresh && live && !busy()) { live.replaceWith(fresh); localTimes(fresh); }
      })
      .catch(function () {})
      .then(schedule);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var select = document.getElementById("refresh");
    if (select) {
      var saved = localStorage.getItem(KEY);
      if (saved !== null) { select.value = saved; }
      select.addEventListener("change", function () { localStorage.setItem(KEY, select.value); schedule(); });
    }
    document.addEventListener("visibilitychange", schedule);
    schedule();
  });
})();

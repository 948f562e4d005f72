// The board refreshes its live part every 2 seconds (server-rendered HTML: no build step, no templates here).
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board || !board.dataset.live) { return; }
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(board.dataset.live, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null && html !== undefined) { board.innerHTML = html; } })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, 2000);
}());

// The chair board, live (docs/console.md, "The live board"): listens to /board/events, the
// console's server-sent events for this site and day, and has htmx fetch the rows again when
// the day changes. If the browser cannot keep the stream open (no EventSource, the console
// answering 204 because the user's roles do not subscribe, a proxy that cuts it), the board
// falls back to fetching its rows every data-poll-seconds. After a reconnect it fetches once:
// a change may have come while it was away.
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board || !board.dataset.events) { return; }
  var status = document.getElementById("board-live");
  var pollSeconds = Number(board.dataset.pollSeconds) || 30;
  var poller = null;

  function refresh() { if (window.htmx) { window.htmx.trigger(board, "board-changed"); } }
  function say(text) { if (status) { status.textContent = text; } }
  function poll() {
    board.dataset.live = "polling";
    say("Updates every " + pollSeconds + " s");
    if (poller === null) { poller = window.setInterval(refresh, pollSeconds * 1000); }
  }
  function live() {
    if (settling !== null) { window.clearTimeout(settling); settling = null; }
    board.dataset.live = "on";
    say("Live: changes appear as they happen");
    if (poller !== null) { window.clearInterval(poller); poller = null; }
  }

  if (!window.EventSource) { poll(); return; }
  var source = new EventSource(board.dataset.events);
  var opened = false;
  var settling = null;
  // Live once a message came, or the stream stayed open a few seconds: a stream that opens and
  // closes at once (notify refusing it: too many streams) must leave the polling running.
  source.addEventListener("open", function () {
    if (opened) { refresh(); }
    opened = true;
    if (settling === null) { settling = window.setTimeout(live, 5000); }
  });
  source.addEventListener("heartbeat", live);
  source.addEventListener("board", function () { live(); refresh(); });
  source.addEventListener("error", function () {
    // CONNECTING: the browser retries by itself; CLOSED: it has given up (204, an error page)
    if (settling !== null) { window.clearTimeout(settling); settling = null; }
    poll();
    if (source.readyState === EventSource.CLOSED) { source.close(); }
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();

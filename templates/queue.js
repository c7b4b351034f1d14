// The queue updates itself: on each change the server announces (one
// server-sent event per Task), the table is fetched again with the same
// filters and swapped in. No data travels in the event, only the Task id.
(function () {
  var table = document.getElementById('queue-table');
  if (!table || !window.EventSource) return;
  var base = location.pathname;
  var pending = false;
  function refresh() {
    if (pending) return;
    pending = true;
    setTimeout(function () {
      var current = document.getElementById('queue-table');
      var query = current ? current.getAttribute('data-query') : '';
      var page = new URLSearchParams(location.search).get('page');
      var url = base + '?' + query + (page ? '&page=' + page : '') + '&fragment=1';
      fetch(url, { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        pending = false;
        if (!html) return;
        var holder = document.createElement('div');
        holder.innerHTML = html;
        var fresh = holder.querySelector('#queue-table');
        var old = document.getElementById('queue-table');
        // Never replace the table while someone is typing in it: do it
        // when they leave it.
        if (!fresh || !old) return;
        if (old.contains(document.activeElement)) {
          old.addEventListener('focusout', function later(e) {
            if (!old.contains(e.relatedTarget)) { old.removeEventListener('focusout', later); refresh(); }
          });
          return;
        }
        old.replaceWith(fresh);
      }, function () { pending = false; });
    }, 150);
  }
  var events = new EventSource(base + '/events');
  events.addEventListener('task', refresh);
})();

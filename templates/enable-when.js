// Show a screening question only when its enableWhen holds. The server
// checks the same conditions and ignores answers to questions that do not
// apply, so the form works (with every question shown) without this script.
(function () {
  var form = document.querySelector('form.screening');
  if (!form) return;
  function values(name) {
    var out = [];
    form.querySelectorAll('[name="' + CSS.escape(name) + '"]').forEach(function (el) {
      var on = (el.type === 'radio' || el.type === 'checkbox') ? el.checked : el.value !== '';
      if (on) out.push(el.value);
    });
    return out;
  }
  function update() {
    form.querySelectorAll('[data-when]').forEach(function (el) {
      var when = JSON.parse(el.dataset.when);
      var results = when.c.map(function (c) {
        var v = values(c.q);
        if (c.op === 'exists') return (v.length > 0) === (c.a === 'true');
        if (c.op === '=') return v.indexOf(c.a) >= 0;
        return v.length > 0 && v.indexOf(c.a) < 0;
      });
      el.hidden = !(when.any ? results.some(Boolean) : results.every(Boolean));
    });
  }
  form.addEventListener('change', update);
  update();
})();

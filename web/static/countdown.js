// Live countdown of a hold: counts to data-expires (epoch ms), correcting for the browser's clock skew
// against the server (data-now); when it reaches zero it says so and disables the payment button.
(function () {
  "use strict";
  var el = document.getElementById("countdown");
  if (!el) { return; }
  var expires = parseInt(el.getAttribute("data-expires"), 10);
  var serverNow = parseInt(el.getAttribute("data-now"), 10);
  if (!expires || !serverNow) { return; }
  var skew = serverNow - Date.now();
  function tick() {
    var left = Math.floor((expires - (Date.now() + skew)) / 1000);
    if (left <= 0) {
      el.textContent = "This hold has expired; the seats have been released. Please search again.";
      el.classList.add("expired");
      var form = document.getElementById("pay-form");
      if (form) {
        var buttons = form.querySelectorAll("button");
        for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
      }
      return;
    }
    var m = Math.floor(left / 60), s = left % 60;
    el.textContent = "Seats held for " + m + ":" + (s < 10 ? "0" : "") + s + " more — pay now to confirm them.";
    window.setTimeout(tick, 1000 - (Date.now() % 1000));
  }
  tick();
}());

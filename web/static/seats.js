// Seat map: at most 6 seats may be picked; shows how many are chosen (works without it, too).
(function () {
  "use strict";
  var form = document.getElementById("seat-form");
  if (!form) { return; }
  var MAX = 6;
  var boxes = form.querySelectorAll('input[name="seat"]');
  function update(ev) {
    var chosen = form.querySelectorAll('input[name="seat"]:checked');
    if (chosen.length > MAX && ev && ev.target) {
      ev.target.checked = false;
      window.alert("At most " + MAX + " passengers can travel on one booking.");
    }
    for (var i = 0; i < boxes.length; i++) {
      boxes[i].parentNode.classList.toggle("chosen", boxes[i].checked);
    }
  }
  for (var i = 0; i < boxes.length; i++) { boxes[i].addEventListener("change", update); }
  update();
}());

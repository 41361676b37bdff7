// The verify button: say that it runs, since a run takes a while.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("run-verify");
  if (!form) return;
  form.addEventListener("submit", function () {
    form.querySelector("button").disabled = true;
    document.getElementById("verify-note").textContent = "verify runs; the page reloads with its result";
  });
  // Redraw the health and graphs every 15 seconds, unless verify runs.
  setInterval(function () {
    if (!form.querySelector("button").disabled) location.reload();
  }, 15000);
});

// Served by the static node. The form works without it; this only shows the
// chosen image's name and size, and warns before sending one that is too big.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const maxBytes = 5 * 1024 * 1024;
  for (const input of document.querySelectorAll('input[type="file"]')) {
    const label = input.parentElement.querySelector(".file-name");
    if (!label) continue;
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      if (!file) {
        label.textContent = "";
        input.setCustomValidity("");
        return;
      }
      const kb = Math.ceil(file.size / 1024);
      label.textContent = `${file.name} (${kb} KB)`;
      input.setCustomValidity(file.size > maxBytes ? "The image is larger than 5 MB." : "");
    });
  }
});

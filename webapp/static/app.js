// Optional: the form works without this file. It makes the whole drop zone accept a dragged
// file and shows which file was chosen. No framework, nothing loaded from elsewhere.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file");
  const name = document.getElementById("file-name");
  const form = document.getElementById("upload-form");
  const submit = document.getElementById("submit");
  if (!zone || !input) return;
  const show = () => { name.textContent = input.files.length ? input.files[0].name : ""; };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, () => {
    zone.classList.remove("dragging");
  }));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      show();
    }
  });
  form.addEventListener("submit", () => {
    submit.disabled = true;
    submit.textContent = "Classifying…";
  });
});

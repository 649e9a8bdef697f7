// Applies the saved theme before the first paint (a classic, blocking
// script: modules run too late and the page would flash). With no saved
// choice the CSS follows prefers-color-scheme.
(function () {
  try {
    var t = localStorage.getItem("aivonx-theme");
    if (t === "light" || t === "dark") document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled: follow the system */ }
})();

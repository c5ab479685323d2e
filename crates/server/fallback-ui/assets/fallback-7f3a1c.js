// Exchanges the one-time login code in the URL's fragment (#code=...) for a key.
(async () => {
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  if (!code) return;
  history.replaceState(null, "", location.pathname);
  const res = await fetch("/api/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ code }),
  });
  const body = await res.json();
  const out = document.getElementById("key");
  out.hidden = false;
  if (res.ok) {
    localStorage.setItem("voxgate.key", body.secret);
    out.querySelector("code").textContent = body.secret;
  } else {
    out.textContent = body.error.message;
  }
})();

// Formatting of sizes, durations and times for the tables.
export function bytes(n) {
  if (n == null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

export function duration(s) {
  if (s == null || !isFinite(s)) return "—";
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min " + Math.floor(s % 60) + " s";
  const h = Math.floor(m / 60);
  if (h < 48) return h + " h " + (m % 60) + " min";
  return Math.floor(h / 24) + " d " + (h % 24) + " h";
}

export function since(iso, now = Date.now()) {
  if (!iso) return "—";
  const t = Date.parse(iso);
  return isNaN(t) ? "—" : duration(Math.max(0, (now - t) / 1000));
}

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return isNaN(d) ? "—" : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export const label = (sb) => sb.name || sb.id.slice(0, 8);
